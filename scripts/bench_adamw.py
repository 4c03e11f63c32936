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
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import xtremedistil_tf  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)


def median_ms(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000


def callables(model, batch_size: int, seq_length: int, fused: bool):
    """(train step, embedding-table update) with Keras' AdamW (`fused=False`) or ours."""
    import tensorflow as tf

    from xtremedistil_tf import (benchmark_modes, config as config_lib, objectives, stages,
                                 train)

    distil = config_lib.DistilConfig(stages=("logits",), gradual_unfreezing=False)
    (stage,) = stages.build_schedule(distil, model.num_blocks, freeze_embeddings=False)
    variables = train.stage_variables(model, stage)
    optimizer, _ = train.make_optimizer(variables, stage.learning_rate, 10_000,
                                        distil.warmup_ratio, distil.weight_decay, fused=fused)
    step = train.make_train_step(model, "logits", objectives.LossSettings(), variables,
                                 optimizer)
    rng = np.random.default_rng(0)
    vocab = model.encoder.embeddings.weight.shape[0]
    ids = rng.integers(5, vocab, (batch_size, seq_length)).astype(np.int32)
    batch = {"input_ids": tf.constant(ids), "attention_mask": tf.ones_like(ids),
             **benchmark_modes.random_targets("logits", rng, batch_size, seq_length,
                                              model.num_labels, model.hidden_size)}
    table = model.encoder.embeddings.weight
    table_opt, _ = train.make_optimizer([table], 1e-5, 10_000, 0.1, 0.01, fused=fused)
    grad = tf.IndexedSlices(
        tf.constant(rng.standard_normal((ids.size, table.shape[1])).astype(np.float32)),
        tf.constant(ids.ravel()), tf.constant(table.shape))
    update = tf.function(lambda: table_opt.apply_gradients([(grad, table)]), autograph=False)
    return (lambda: step(batch)[0].numpy()), (lambda: update().numpy())


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
    from xtremedistil_tf import benchmark_models, models, startup

    print(startup.cpu_line())
    print("| model | params | embedding table | what | Keras AdamW ms | ours ms | speed-up |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for name in (m for m in args.models.split(",") if m):
        model = benchmark_models.build_model(name)
        fns = {fused: callables(model, args.batch_size, args.seq_length, fused)
               for fused in (False, True)}
        best = {}
        for _ in range(args.rounds):
            for fused, pair in fns.items():
                for what, fn in zip(("train step", "table update"), pair, strict=True):
                    ms = median_ms(fn, args.warmup, args.repeats)
                    best[fused, what] = min(best.get((fused, what), ms), ms)
        table = model.encoder.embeddings.weight.shape
        for what in ("train step", "table update"):
            keras_ms, ours = best[False, what], best[True, what]
            print(f"| {os.path.basename(name.rstrip('/'))} | "
                  f"{models.count_params(model) / 1e6:.1f}M | {table[0]} x {table[1]} | "
                  f"{what} {args.batch_size} x {args.seq_length} | {keras_ms:.0f} | "
                  f"{ours:.0f} | {keras_ms / ours:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
