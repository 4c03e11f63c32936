"""Times training steps with Keras' AdamW and with ours (`xtremedistil_tf.adamw`), in one process.

    python scripts/bench_adamw.py --models ../models/multilingual-e5-small,xtremedistil-l6-h256

For each model: one distillation step (`logits` stage: every layer and the embedding table
train, as in the zero-shot distillers) on a random batch of --batch_size x --seq_length, with
each optimizer built as `train.make_optimizer` builds it; then the AdamW update of the model's
embedding table alone (a sparse gradient of batch_size x seq_length rows). Warm-up calls first
(tracing and XLA compilation excluded); the two optimizers alternate over --rounds rounds and
each keeps its fastest median (the VM's speed drifts over minutes; noise only adds time).
Prints a markdown table with the speed-up measured in this run.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import xtremedistil_tf  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)


def callables(model, ids: np.ndarray, fused: bool):
    """(train step, update of the embedding table with a gradient on the rows of `ids`), each
    `fn(input_ids, attention_mask) -> dict` as `speed.time_calls` takes it, with Keras' AdamW
    (`fused=False`) or ours."""
    import tensorflow as tf

    from xtremedistil_tf import benchmark_modes, train

    step = benchmark_modes.make_train_step(model, "logits", 10_000, fused=fused)
    rng = np.random.default_rng(0)
    table = model.encoder.embeddings.weight
    targets = benchmark_modes.random_targets("logits", rng, *ids.shape,
                                             model.num_labels, model.hidden_size)
    table_opt, _ = train.make_optimizer([table], 1e-5, 10_000, 0.1, 0.01, fused=fused)
    grad = tf.IndexedSlices(
        tf.constant(rng.standard_normal((ids.size, table.shape[1])).astype(np.float32)),
        tf.constant(ids.ravel()), tf.constant(table.shape))
    update = tf.function(lambda: table_opt.apply_gradients([(grad, table)]), autograph=False)
    return benchmark_modes.train_callable(step, targets), lambda *_: {"step": update()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="xtremedistil-l6-h256",
                   help="comma-separated folders, hub ids or presets (benchmark --models)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--seq_length", type=int, default=32, help="WikiANN: about 20 sub-words")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args(argv)
    import tensorflow as tf

    from xtremedistil_tf import benchmark_models, models, speed, startup

    print(startup.cpu_line())
    print("| model | params | embedding table | what | Keras AdamW ms | ours ms | speed-up |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for name in (m for m in args.models.split(",") if m):
        model = benchmark_models.build_model(name)
        table = model.encoder.embeddings.weight.shape
        ids = np.random.default_rng(0).integers(5, table[0], (args.batch_size, args.seq_length))
        fns = {fused: callables(model, ids, fused) for fused in (False, True)}
        ids = tf.constant(ids, tf.int32)
        best = {}
        for _ in range(args.rounds):
            for fused, pair in fns.items():
                for what, fn in zip(("train step", "table update"), pair, strict=True):
                    ms = float(np.median(speed.time_calls(fn, ids, tf.ones_like(ids),
                                                          args.repeats, args.warmup)))
                    best[fused, what] = min(best.get((fused, what), ms), ms)
        for what in ("train step", "table update"):
            keras_ms, ours = best[False, what], best[True, what]
            print(f"| {os.path.basename(name.rstrip('/'))} | "
                  f"{models.count_params(model) / 1e6:.1f}M | {table[0]} x {table[1]} | "
                  f"{what} {args.batch_size} x {args.seq_length} | {keras_ms:.0f} | "
                  f"{ours:.0f} | {keras_ms / ours:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
