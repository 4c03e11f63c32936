"""Timing, one way for every number we print.

`time_calls` times any callable (TensorFlow, LiteRT, PyTorch, ONNX Runtime) with its outputs
copied to host memory, after untimed warm-up calls; the benchmark uses it for every mode.
`time_forward` is what a run's `metrics.json` reports (`ms_per_batch`, `speedup`): the model's
logits from a plain `tf.function` (no decoding, no signature or input checks), one fixed batch,
teacher and student in the same process, median of 10 calls after 3 warm-up calls.
`fastest_of` times several models in interleaved rounds and keeps each one's fastest (the
re-timings of the result scripts).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import tensorflow as tf


def time_forward(
    model,
    vocab_size: int,
    batch_size: int = 32,
    seq_length: int = 128,
    repeats: int = 10,
    warmup: int = 3,
    seed: int = 0,
) -> dict:
    """Milliseconds per batch of the model's compiled inference forward pass.

    Args:
        model: a `TokenClassifier`.
        vocab_size: ids are drawn uniformly from `[0, vocab_size)` (the ids do not change the cost).
        batch_size, seq_length: the fixed batch shape.
        repeats: timed calls (median reported); `warmup` untimed calls come first (tracing and
            compilation happen there).

    Returns:
        {"ms_per_batch": median, "ms_p10": ..., "ms_p90": ..., "batch_size", "seq_length"}.
    """
    rng = np.random.default_rng(seed)
    ids = tf.constant(rng.integers(0, vocab_size, (batch_size, seq_length)), tf.int32)
    mask = tf.ones_like(ids)

    @tf.function(autograph=False)
    def forward(input_ids, attention_mask):
        return model({"input_ids": input_ids, "attention_mask": attention_mask})["logits"]

    times = time_calls(lambda i, m: {"logits": forward(i, m)}, ids, mask, repeats, warmup)
    q = np.percentile(times, [10, 90])
    return {
        "ms_per_batch": statistics.median(times),
        "ms_p10": float(q[0]),
        "ms_p90": float(q[1]),
        "batch_size": batch_size,
        "seq_length": seq_length,
    }


def fastest_of(models: dict, vocab_size: int, rounds: int, lengths=(128,),
               batch_size: int = 32) -> dict:
    """`time_forward` of every model at every sequence length, in `rounds` interleaved rounds,
    each (model key, length) keeping its fastest round: this VM's speed drifts by 10-20 % over
    minutes, and noise only adds time.

    Returns:
        {(key, length): the `time_forward` result of its fastest round}.
    """
    best: dict = {}
    for _ in range(rounds):
        for key, model in models.items():
            for length in lengths:
                r = time_forward(model, vocab_size, batch_size, length)
                old = best.get((key, length))
                if old is None or r["ms_per_batch"] < old["ms_per_batch"]:
                    best[key, length] = r
    return best


def time_calls(fn, input_ids, attention_mask, repeats: int, warmup: int) -> list[float]:
    """Milliseconds of each of `repeats` calls (outputs copied to host) after `warmup` calls.

    `fn` returns a dict of TensorFlow or PyTorch tensors (`.numpy()` waits for each and brings
    it to host memory) or of numpy arrays (ONNX Runtime's outputs, already there).
    """
    for _ in range(warmup):
        [_to_host(t) for t in fn(input_ids, attention_mask).values()]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        [_to_host(t) for t in fn(input_ids, attention_mask).values()]
        times.append((time.perf_counter() - t0) * 1000)
    return times


def _to_host(t):
    return t.numpy() if hasattr(t, "numpy") else np.asarray(t)
