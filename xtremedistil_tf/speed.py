"""Timing a model's forward pass the same way for teacher and student.

Used for the `ms_per_batch` and `speedup` of every run's report: same batch, same sequence length,
same process, compiled once and warmed up before any timing, median of several repetitions.
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

    @tf.function
    def forward(input_ids, attention_mask):
        return model({"input_ids": input_ids, "attention_mask": attention_mask})["logits"]

    for _ in range(warmup):
        forward(ids, mask).numpy()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        forward(ids, mask).numpy()
        times.append((time.perf_counter() - t0) * 1000)
    q = np.percentile(times, [10, 90])
    return {
        "ms_per_batch": statistics.median(times),
        "ms_p10": float(q[0]),
        "ms_p90": float(q[1]),
        "batch_size": batch_size,
        "seq_length": seq_length,
    }
