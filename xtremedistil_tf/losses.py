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


def cross_entropy(logits: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor,
                  class_weights=None) -> tf.Tensor:
    """Softmax cross-entropy of integer labels.

    Args:
        logits: `[B, T, K]`.
        labels: `[B, T]` int; positions with a negative id must be masked out.
        mask: `[B, T]`.
        class_weights: optional `[K]`: each position's loss is scaled by its gold label's
            weight; the mean stays over counted positions (a weight below 1 makes that label
            cheaper to miss, not the other positions dearer).
    """
    safe = tf.maximum(labels, 0)
    per_pos = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=logits)
    if class_weights is not None:
        per_pos *= tf.gather(tf.constant(class_weights, per_pos.dtype), safe)
    return _masked_mean(per_pos, mask)


def prob_mse(student: tf.Tensor, target: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """MSE between the softmax distributions of student and teacher logits (TSL, MSD).

    Args:
        student, target: `[B, W, K]` logits.
        mask: `[B, W]`.
    """
    target = tf.stop_gradient(tf.nn.softmax(tf.cast(target, student.dtype), axis=-1))
    return mse(tf.nn.softmax(student, axis=-1), target, mask)


def mmd2(x: tf.Tensor, y: tf.Tensor, kernel_mul: float = 2.0, kernel_num: int = 5) -> tf.Tensor:
    """Squared maximum mean discrepancy of two samples with a multi-kernel RBF (MSD).

    The kernel is Σ_i exp(-‖a-b‖² / (σ · kernel_mul^(i - kernel_num//2))), i = 0..kernel_num-1,
    where σ is the mean squared distance between distinct points of both samples together
    (treated as a constant). Returns mean K(x,x) + mean K(y,y) - 2 mean K(x,y) (biased estimate).

    Args:
        x: `[n, D]`; y: `[m, D]` (n, m >= 1; n + m >= 2).
    """
    x = tf.cast(x, tf.float32)
    y = tf.cast(y, tf.float32)
    n = tf.shape(x)[0]
    total = tf.concat([x, y], axis=0)
    sq = tf.reduce_sum(tf.square(total), axis=1)
    dist = tf.maximum(sq[:, None] + sq[None, :] - 2.0 * tf.matmul(total, total, transpose_b=True),
                      0.0)
    count = tf.cast(tf.shape(total)[0], tf.float32)
    bandwidth = tf.stop_gradient(tf.math.divide_no_nan(tf.reduce_sum(dist), count**2 - count))
    bandwidth = tf.maximum(bandwidth, 1e-12) / kernel_mul ** (kernel_num // 2)
    kernel = tf.add_n([tf.exp(-dist / (bandwidth * kernel_mul**i)) for i in range(kernel_num)])
    xx = tf.reduce_mean(kernel[:n, :n])
    yy = tf.reduce_mean(kernel[n:, n:])
    xy = tf.reduce_mean(kernel[:n, n:])
    return xx + yy - 2.0 * xy


def cosine_similarity(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Row-wise cosine of `[N, D]` tensors (0 for zero vectors)."""
    a = tf.math.l2_normalize(tf.cast(a, tf.float32), axis=-1, epsilon=1e-12)
    b = tf.math.l2_normalize(tf.cast(b, tf.float32), axis=-1, epsilon=1e-12)
    return tf.reduce_sum(a * b, axis=-1)


def binary_cross_entropy(pred: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Element-wise BCE of probabilities `pred` against soft or hard targets in [0, 1]."""
    pred = tf.clip_by_value(pred, 1e-7, 1.0 - 1e-7)
    return -(target * tf.math.log(pred) + (1.0 - target) * tf.math.log(1.0 - pred))


def partners(n: tf.Tensor) -> tf.Tensor:
    """For N items, the index each is paired with: item i with item (i + max(1, N//2)) mod N.

    Deterministic (resumable runs repeat it), and in a batch of sentences it mostly pairs words
    of different sentences. N < 2 gives each item itself (callers mask such pairs out).
    """
    shift = tf.maximum(1, n // 2)
    return tf.math.floormod(tf.range(n) + shift, tf.maximum(n, 1))


def balanced_bce(pred: tf.Tensor, same: tf.Tensor) -> tf.Tensor:
    """BCE of pair similarities against 0/1 labels, both classes weighted one half (MTMT's
    similarity teacher sees as many same-type as different-type pairs)."""
    same = tf.cast(same, tf.float32)
    per_pair = binary_cross_entropy(pred, same)
    pos = tf.math.divide_no_nan(tf.reduce_sum(per_pair * same), tf.reduce_sum(same))
    neg = tf.math.divide_no_nan(tf.reduce_sum(per_pair * (1 - same)), tf.reduce_sum(1 - same))
    return 0.5 * (pos + neg)


def mtmt_loss(student_probs: tf.Tensor, teacher_probs: tf.Tensor, student_vec: tf.Tensor,
              teacher_sim: tf.Tensor, alpha: float = 1.0) -> tf.Tensor:
    """MTMT's student loss over word pairs: the sum of `mtmt_terms`."""
    return tf.add_n(list(mtmt_terms(student_probs, teacher_probs, student_vec, teacher_sim,
                                    alpha).values()))


def mtmt_terms(student_probs: tf.Tensor, teacher_probs: tf.Tensor, student_vec: tf.Tensor,
               teacher_sim: tf.Tensor, alpha: float = 1.0) -> dict[str, tf.Tensor]:
    """MTMT's student loss over word pairs (Li et al., ACL 2022), as its two terms.

    Each word i is paired with word j = `partners(N)[i]`. With the recogniser teacher's
    distributions p, its similarity teacher's score t = σ(cos(vᵢ, vⱼ)) and the student's
    s = σ(cos(hᵢ, hⱼ)) of its own word vectors, per pair:
      α_i = (max p_i)², β = (2t − 1)², γ = 1 − |σ(cos(p_i, p_j)) − t|,
      loss = alpha · mean(γ β BCE(s, t)) + ½ mean(γ α_i ‖q_i − p_i‖²) + ½ mean(γ α_j ‖q_j − p_j‖²)
    where q are the student's distributions and ‖·‖² sums over labels.

    Args:
        student_probs, teacher_probs: `[N, K]` distributions of the N real words.
        student_vec: `[N, H_s]` the student's word vectors; teacher_sim: `[N, H_t]` the
            similarity teacher's word vectors.
        alpha: weight of the similarity term.

    Returns:
        `similarity` (alpha · the pair BCE) and `recognition` (the two distribution terms);
        both 0 with fewer than two words.
    """
    n = tf.shape(student_probs)[0]
    j = partners(n)
    p = tf.stop_gradient(tf.cast(teacher_probs, tf.float32))
    v = tf.stop_gradient(tf.cast(teacher_sim, tf.float32))
    t = tf.sigmoid(cosine_similarity(v, tf.gather(v, j)))
    s = tf.sigmoid(cosine_similarity(student_vec, tf.gather(student_vec, j)))
    conf = tf.square(tf.reduce_max(p, axis=-1))
    beta = tf.square(2.0 * t - 1.0)
    gamma = 1.0 - tf.abs(tf.sigmoid(cosine_similarity(p, tf.gather(p, j))) - t)
    err = tf.reduce_sum(tf.square(student_probs - p), axis=-1)
    valid = tf.cast(n >= 2, tf.float32)
    sim = tf.reduce_mean(gamma * beta * binary_cross_entropy(s, t))
    rec_i = tf.reduce_mean(gamma * conf * err)
    rec_j = tf.reduce_mean(gamma * tf.gather(conf, j) * tf.gather(err, j))
    return {"similarity": tf.math.multiply_no_nan(alpha * sim, valid),
            "recognition": tf.math.multiply_no_nan(0.5 * rec_i + 0.5 * rec_j, valid)}


LOSSES = {
    "mse": mse,
    "kl": kl_divergence,
    "prob_mse": prob_mse,
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
