"""Distillation and labelling losses: small pure functions with one signature.

Every loss is `fn(student, target, mask) -> scalar`: `student` and `target` hold one vector per
word (`[B, W, D]`, first sub-word of each word) or, for labels, `[B, T, K]` logits and `[B, T]`
ids; `mask` (`[B, W]` or `[B, T]`, 1 = counts) removes padding and non-first sub-words. Averages
are over counted positions, via `divide_no_nan`, so an all-padding batch gives 0, not NaN.
"""

from __future__ import annotations

import functools

import tensorflow as tf


def _masked_mean(per_position: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    mask = tf.cast(mask, per_position.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(per_position * mask), tf.reduce_sum(mask))


def mse(student: tf.Tensor, target: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean squared error per word, averaged over the feature axis and counted words.

    Args:
        student: `[B, W, D]`.
        target: `[B, W, D]` (the teacher's; no gradient flows into it).
        mask: `[B, W]`.
    """
    target = tf.stop_gradient(tf.cast(target, student.dtype))
    return _masked_mean(tf.reduce_mean(tf.square(student - target), axis=-1), mask)


def kl_divergence(
    student: tf.Tensor, target: tf.Tensor, mask: tf.Tensor, temperature: float = 1.0
) -> tf.Tensor:
    """KL(teacher ‖ student) of temperature-softened distributions, times T² (Hinton et al.).

    Args:
        student: `[B, W, K]` student logits.
        target: `[B, W, K]` teacher logits.
        mask: `[B, W]`.
        temperature: softening temperature T.
    """
    target = tf.stop_gradient(tf.cast(target, student.dtype))
    t_log = tf.nn.log_softmax(target / temperature, axis=-1)
    s_log = tf.nn.log_softmax(student / temperature, axis=-1)
    per_word = tf.reduce_sum(tf.exp(t_log) * (t_log - s_log), axis=-1)
    return _masked_mean(per_word, mask) * temperature**2


def cross_entropy(logits: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Softmax cross-entropy of integer labels.

    Args:
        logits: `[B, T, K]`.
        labels: `[B, T]` int; positions with a negative id must be masked out.
        mask: `[B, T]`.
    """
    safe = tf.maximum(labels, 0)
    per_pos = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=logits)
    return _masked_mean(per_pos, mask)


LOSSES = {
    "mse": mse,
    "kl": kl_divergence,
    "cross_entropy": cross_entropy,
}


def get(name: str, temperature: float = 1.0):
    """Returns the loss registered under `name` (`kl` bound to `temperature`)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; use one of {', '.join(LOSSES)}")
    if name == "kl":
        return functools.partial(kl_divergence, temperature=temperature)
    return LOSSES[name]


def gather_words(x: tf.Tensor, word_index: tf.Tensor) -> tf.Tensor:
    """Picks each word's first sub-word vector: `[B, T, D]`, `[B, W]` -> `[B, W, D]`."""
    return tf.gather(x, word_index, batch_dims=1)
