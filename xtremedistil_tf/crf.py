"""Linear-chain CRF: log-likelihood, Viterbi decoding and posterior marginals (the Keras layer
that holds the parameters, and the IOB2 constraints, are `crf_layer`).

The functions are plain TensorFlow (no Keras needed) and share one convention:

* `emissions` `[B, T, K]` are per-position tag scores, `transitions[i, j]` `[K, K]` scores tag
  `i` followed by tag `j`, optional `start` / `end` `[K]` score the first / last tag.
* `mask` `[B, T]` (bool, int or float; non-zero = counts) selects the positions the chain runs
  over. Masked positions may sit anywhere, also between counted ones (non-first sub-words): the
  chain connects consecutive *unmasked* positions, and masked ones contribute nothing. A row with
  no unmasked position has log-likelihood 0 and decodes to all zeros.

Every recursion is a `tf.scan` over time, so `T` may be dynamic (`[None, None, K]` signatures)
and everything compiles with `tf.function(jit_compile=True)`. Inside `with without_tensor_lists():`
the recursions are traced as `tf.while_loop`s that write each step into a preallocated
`[T, ...]` tensor instead of a TensorArray: the TFLite converter lowers TensorArrays only when
their element shape is static, which a dynamic batch is not (see `litert`). Masked steps carry
the recursion state through unchanged instead of compacting the sequence, which keeps shapes
static per batch.
Half-precision emissions (float16 / bfloat16) are computed in float32 and return float32: sums
of `T` scores and log-sum-exp over tags lose too much in 8 or 11 mantissa bits.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

# Score given to forbidden transitions at decode time. Finite (not -inf) so that sums and
# differences never produce NaN; large enough to dominate any real path score difference
# (|emission| ~ 1e4 over thousands of steps is ~1e7), small enough that even T * NEG stays far
# from float32 overflow (3.4e38) when no allowed path exists at all.
_NEG = -1e30


_WITHOUT_LISTS = contextvars.ContextVar("crf_without_tensor_lists", default=False)


@contextlib.contextmanager
def without_tensor_lists() -> Iterator[None]:
    """Traces the recursions inside the block without TensorArrays (for the TFLite converter).

    Same results as `tf.scan`; each step writes its state into a `[T, ...]` tensor with a
    `tf.where` on the step's index, O(T) element writes per step, so O(T^2 * B * K) in all:
    ~5M at 32 x 128 x 9, nothing next to an encoder's GFLOPs.
    """
    token = _WITHOUT_LISTS.set(True)
    try:
        yield
    finally:
        _WITHOUT_LISTS.reset(token)


def _scan(fn, elems: tuple, initializer: tuple, reverse: bool = False) -> tuple:
    """`tf.scan(fn, elems, initializer, reverse=reverse)` over tuples (time first), or its
    TensorArray-free twin inside `without_tensor_lists()`."""
    if not _WITHOUT_LISTS.get():
        return tf.scan(fn, elems, initializer=initializer, reverse=reverse)
    steps = tf.shape(elems[0])[0]
    positions = tf.range(steps)
    stacked = tuple(tf.zeros(tf.concat([[steps], tf.shape(x)], 0), x.dtype)
                    for x in initializer)

    def body(i, carry, stacked):
        t = steps - 1 - i if reverse else i
        carry = tuple(fn(carry, tuple(tf.gather(e, t) for e in elems)))
        stacked = tuple(
            tf.where(tf.reshape(tf.equal(positions, t), [-1] + [1] * c.shape.rank), c[None], s)
            for c, s in zip(carry, stacked))
        return i + 1, carry, stacked

    _, _, stacked = tf.while_loop(lambda i, *_: i < steps, body,
                                  (tf.constant(0), tuple(initializer), stacked))
    return stacked


def _compute_dtype(emissions: tf.Tensor) -> tf.DType:
    # float64 stays float64 (gradient checks); half types are promoted, see module docstring.
    if emissions.dtype in (tf.float16, tf.bfloat16):
        return tf.float32
    return emissions.dtype


def _prepare(emissions, mask, transitions, start, end):
    """Casts inputs to one compute dtype and puts time first for `tf.scan`.

    Returns:
        `(emissions [T, B, K], mask [T, B] bool, transitions [K, K], start [K], end [K])`.
    """
    emissions = tf.convert_to_tensor(emissions)
    dtype = _compute_dtype(emissions)
    emissions = tf.cast(emissions, dtype)
    num_tags = tf.shape(emissions)[-1]
    if mask is None:
        mask = tf.ones(tf.shape(emissions)[:2], tf.bool)
    mask = tf.cast(mask, tf.bool)  # x != 0 for numeric masks
    transitions = tf.cast(transitions, dtype)
    start = tf.zeros([num_tags], dtype) if start is None else tf.cast(start, dtype)
    end = tf.zeros([num_tags], dtype) if end is None else tf.cast(end, dtype)
    return (
        tf.transpose(emissions, [1, 0, 2]),
        tf.transpose(mask, [1, 0]),
        transitions,
        start,
        end,
    )


def _zeros_state(emissions_tbk: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    # Built from the shape, not from emissions[0], so that T = 0 also works.
    shape = tf.shape(emissions_tbk)
    return tf.zeros(shape[1:], emissions_tbk.dtype), tf.zeros(shape[1:2], tf.bool)


def _last(stacked: tf.Tensor, initial: tf.Tensor) -> tf.Tensor:
    """`stacked[-1]`, or `initial` when the scan ran over zero steps."""
    return tf.cond(tf.shape(stacked)[0] > 0, lambda: stacked[-1], lambda: initial)


def _forward(emissions, mask, transitions, start):
    """Forward algorithm in log space, time-major.

    Args:
        emissions: `[T, B, K]`.
        mask: `[T, B]` bool.
        transitions: `[K, K]`.
        start: `[K]`.

    Returns:
        `(alphas [T, B, K], started [T, B])`: `alphas[t, b, j]` is the log-sum of the scores of
        all partial paths over the unmasked positions `<= t` that end in tag `j` (carried
        unchanged across masked steps); `started[t, b]` says whether any position `<= t` counted.
    """

    def step(carry, inputs):
        alpha, started = carry
        e_t, m_t = inputs
        # alpha starts at zeros, never -inf: `nxt` stays finite on rows that have not started,
        # so the tf.where below never multiplies a zero gradient by inf (NaN).
        nxt = tf.reduce_logsumexp(tf.expand_dims(alpha, 2) + transitions[None], axis=1) + e_t
        new = tf.where(started[:, None], nxt, start[None] + e_t)
        return tf.where(m_t[:, None], new, alpha), tf.logical_or(started, m_t)

    return _scan(step, (emissions, mask), initializer=_zeros_state(emissions))


def _gold_score(emissions, tags, mask, transitions, start, end):
    """Unnormalised score of the given tag path over the unmasked positions.

    Args:
        emissions: `[T, B, K]`.
        tags: `[T, B]` int32, already 0 at masked positions.
        mask: `[T, B]` bool.
        transitions, start, end: `[K, K]`, `[K]`, `[K]`.

    Returns:
        `[B]`, 0 for rows without unmasked positions.
    """
    dtype = emissions.dtype
    emitted = tf.gather(emissions, tags, batch_dims=2)  # [T, B]
    total = tf.reduce_sum(tf.where(mask, emitted, tf.zeros_like(emitted)), axis=0)
    num_tags = tf.shape(transitions)[0]
    flat_transitions = tf.reshape(transitions, [-1])

    # The transition into tag_t comes from the last *unmasked* tag, which a scan remembers.
    def step(carry, inputs):
        prev, started, score = carry
        tag, m_t = inputs
        link = tf.gather(flat_transitions, prev * num_tags + tag)
        add = tf.where(started, link, tf.gather(start, tag))
        score = score + tf.where(m_t, add, tf.zeros_like(add))
        return tf.where(m_t, tag, prev), tf.logical_or(started, m_t), score

    batch = tf.shape(tags)[1:2]
    init = (tf.zeros(batch, tf.int32), tf.zeros(batch, tf.bool), tf.zeros(batch, dtype))
    last, started, score = (
        _last(stacked, initial)
        for stacked, initial in zip(_scan(step, (tags, mask), initializer=init), init)
    )
    end_score = tf.where(started, tf.gather(end, last), tf.zeros_like(total))
    return total + score + end_score


def _log_partition(emissions, mask, transitions, start, end):
    """`(log Z [B], alphas [T, B, K])` for time-major inputs; log Z is 0 for empty rows."""
    alphas, started = _forward(emissions, mask, transitions, start)
    init_alpha, init_started = _zeros_state(emissions)
    alpha = _last(alphas, init_alpha)
    started = _last(started, init_started)
    log_z = tf.reduce_logsumexp(alpha + end[None], axis=-1)
    return tf.where(started, log_z, tf.zeros_like(log_z)), alphas


def crf_log_likelihood(
    emissions: tf.Tensor,
    tags: tf.Tensor,
    mask: tf.Tensor | None,
    transitions: tf.Tensor,
    start: tf.Tensor | None = None,
    end: tf.Tensor | None = None,
) -> tf.Tensor:
    """Log-probability of `tags` under the chain over the unmasked positions.

    Args:
        emissions: `[B, T, K]` float tag scores.
        tags: `[B, T]` int gold tags; values at masked positions are ignored (may be -100).
        mask: `[B, T]` bool / int / float, non-zero = position counts; None = all count.
        transitions: `[K, K]`, `transitions[i, j]` scores tag i followed by tag j.
        start: optional `[K]` score of the first unmasked tag.
        end: optional `[K]` score of the last unmasked tag.

    Returns:
        `[B]` log p(tags | emissions), float32 for half-precision emissions, else the
        emissions' dtype; 0 for rows with no unmasked position. Negate and average for a loss.
    """
    emissions, mask, transitions, start, end = _prepare(emissions, mask, transitions, start, end)
    tags = tf.transpose(tf.cast(tags, tf.int32), [1, 0])
    tags = tf.where(mask, tags, tf.zeros_like(tags))  # ignore-index labels must not be gathered
    log_z, _ = _log_partition(emissions, mask, transitions, start, end)
    return _gold_score(emissions, tags, mask, transitions, start, end) - log_z


def _restrict(transitions, start, allowed, allowed_start):
    """Replaces the scores of forbidden transitions / first tags by a large negative."""
    if allowed is not None:
        allowed = tf.cast(allowed, tf.bool)
        transitions = tf.where(allowed, transitions, tf.cast(_NEG, transitions.dtype))
    if allowed_start is not None:
        allowed_start = tf.cast(allowed_start, tf.bool)
        start = tf.where(allowed_start, start, tf.cast(_NEG, start.dtype))
    return transitions, start


def crf_decode(
    emissions: tf.Tensor,
    mask: tf.Tensor | None,
    transitions: tf.Tensor,
    start: tf.Tensor | None = None,
    end: tf.Tensor | None = None,
    allowed: tf.Tensor | np.ndarray | None = None,
    allowed_start: tf.Tensor | np.ndarray | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Viterbi: the highest-scoring tag path over the unmasked positions.

    Args:
        emissions: `[B, T, K]`.
        mask: `[B, T]`, non-zero = position counts; None = all count.
        transitions: `[K, K]`.
        start, end: optional `[K]`.
        allowed: optional `[K, K]` bool, `allowed[i, j]` = tag j may follow tag i (see
            `iob2_allowed`). Forbidden transitions get a large negative score.
        allowed_start: optional `[K]` bool, tags a sequence may start with.

    Returns:
        `(tags [B, T] int32, score [B])`: the best path, 0 at masked positions, and its
        unnormalised score (start + emissions + transitions + end; 0 for empty rows).
    """
    emissions, mask, transitions, start, end = _prepare(emissions, mask, transitions, start, end)
    transitions, start = _restrict(transitions, start, allowed, allowed_start)
    num_tags = tf.shape(emissions)[-1]

    def step(carry, inputs):
        delta, started, _ = carry
        e_t, m_t = inputs
        candidates = tf.expand_dims(delta, 2) + transitions[None]  # [B, K_prev, K_next]
        nxt = tf.reduce_max(candidates, axis=1) + e_t
        new = tf.where(started[:, None], nxt, start[None] + e_t)
        # Masked (and first) steps point every tag at itself, so backtracking passes through.
        identity = tf.broadcast_to(tf.range(num_tags)[None], tf.shape(delta))
        pointer = tf.where(
            tf.logical_and(m_t, started)[:, None],
            tf.argmax(candidates, axis=1, output_type=tf.int32),
            identity,
        )
        return tf.where(m_t[:, None], new, delta), tf.logical_or(started, m_t), pointer

    init_delta, init_started = _zeros_state(emissions)
    init = (init_delta, init_started, tf.zeros(tf.shape(init_delta), tf.int32))
    deltas, started, pointers = _scan(step, (emissions, mask), initializer=init)
    final = _last(deltas, init_delta) + end[None]
    started = _last(started, init_started)
    best_last = tf.argmax(final, axis=-1, output_type=tf.int32)
    score = tf.reduce_max(final, axis=-1)
    score = tf.where(started, score, tf.zeros_like(score))

    def back(carry, inputs):
        current, _ = carry
        pointer, m_t = inputs
        out = tf.where(m_t, current, tf.zeros_like(current))
        return tf.gather(pointer, current, batch_dims=1), out

    _, path = _scan(back, (pointers, mask), initializer=(best_last, best_last), reverse=True)
    return tf.transpose(path, [1, 0]), score


def crf_marginals(
    emissions: tf.Tensor,
    mask: tf.Tensor | None,
    transitions: tf.Tensor,
    start: tf.Tensor | None = None,
    end: tf.Tensor | None = None,
) -> tf.Tensor:
    """Posterior tag marginals p(y_t = k | emissions) by forward-backward.

    Args:
        emissions: `[B, T, K]`.
        mask: `[B, T]`, non-zero = position counts; None = all count.
        transitions: `[K, K]`.
        start, end: optional `[K]`.

    Returns:
        `[B, T, K]` marginals summing to 1 over K at unmasked positions, zeros at masked ones.
    """
    emissions, mask, transitions, start, end = _prepare(emissions, mask, transitions, start, end)
    log_z, alphas = _log_partition(emissions, mask, transitions, start, end)

    # beta_t[i]: log-sum of the scores after unmasked position t given tag i there. The carry
    # `ahead` = e_s + beta_s of the nearest unmasked s > t, so masked steps pass it through.
    def step(carry, inputs):
        ahead, seen, _ = carry
        e_t, m_t = inputs
        through = tf.reduce_logsumexp(transitions[None] + tf.expand_dims(ahead, 1), axis=2)
        beta = tf.where(seen[:, None], through, tf.broadcast_to(end[None], tf.shape(through)))
        ahead = tf.where(m_t[:, None], e_t + beta, ahead)
        return ahead, tf.logical_or(seen, m_t), beta

    init_ahead, init_seen = _zeros_state(emissions)
    _, _, betas = _scan(
        step, (emissions, mask), initializer=(init_ahead, init_seen, init_ahead), reverse=True
    )
    log_marginals = alphas + betas - tf.reshape(log_z, [1, -1, 1])
    marginals = tf.where(tf.expand_dims(mask, 2), tf.exp(log_marginals),
                         tf.zeros_like(log_marginals))
    return tf.transpose(marginals, [1, 0, 2])
