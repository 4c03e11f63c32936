"""Keras' AdamW with its largest variables updated in one fused pass.

A multilingual student's embedding table is most of its weights (250k sub-words x 384:
96M of `teacher:0,...,11`'s 117.5M). Keras' AdamW updates it as a chain of whole-table
operations every step: decay the momentum, scatter the gradient in, the same for the velocity,
then the weight decay and the update, each its own pass over 384 MB. On a 2-core CPU that chain
took 465 ms of a teacher-size student's 1134 ms step; one XLA-compiled pass over the table
(weight decay, momentum, velocity and update together) takes 110 ms
(`scripts/bench_adamw.py`, docs/distil_at_scale.md).

`AdamW` is `keras.optimizers.AdamW` with the same arithmetic, variables and checkpoints: for
variables of at least `FUSED_MIN_SIZE` elements `update_step` computes the same AdamW step
(decoupled weight decay first, then Adam with bias correction; a sparse gradient is summed
into a dense one, as the untouched rows' momentum and velocity decay anyway) in one compiled
function; smaller variables take Keras' own path. Results differ from Keras' only in the order
of floating-point rounding (`tests/test_adamw.py` holds both to a float64 reference).
"""

from __future__ import annotations

import tensorflow as tf

keras = tf.keras

FUSED_MIN_SIZE = 1 << 20  # elements: the embedding tables (and nothing of a block)


@tf.function(jit_compile=True, autograph=False)
def _fused_update(variable, m, v, gradient, alpha, decay, beta_1, beta_2, epsilon):
    """One AdamW step of `variable` in place: `variable -= decay * variable`, then the Adam
    update with step size `alpha` (bias correction folded in, as Keras does)."""
    variable.assign_sub(variable * decay)
    m.assign_add((gradient - m) * (1 - beta_1))
    v.assign_add((tf.square(gradient) - v) * (1 - beta_2))
    variable.assign_sub((m * alpha) / (tf.sqrt(v) + epsilon))


def _local(slot, variable):
    """`slot` (a momentum or velocity), or under a distribution strategy its copy on the device
    of `variable` (the replica's copy that `update_step` is given)."""
    copies = getattr(slot, "values", None)  # a DistributedVariable's per-device copies
    return slot if copies is None else next(c for c in copies if c.device == variable.device)


class AdamW(keras.optimizers.AdamW):
    """`keras.optimizers.AdamW`; variables of `FUSED_MIN_SIZE` elements or more are updated
    (weight decay included) by one compiled function instead of a chain of whole-table ops."""

    def _fused(self, variable) -> bool:
        size = variable.shape.num_elements()
        return not self.amsgrad and size is not None and size >= FUSED_MIN_SIZE

    def _use_weight_decay(self, variable):
        # Keras decays every variable before updating it; fused ones decay in `update_step`.
        return not self._fused(variable) and super()._use_weight_decay(variable)

    def update_step(self, gradient, variable):
        if not self._fused(variable):
            return super().update_step(gradient, variable)
        dtype = variable.dtype
        lr = tf.cast(self.learning_rate, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
        decays = self.weight_decay is not None and super()._use_weight_decay(variable)
        decay = lr * tf.cast(self.weight_decay, dtype) if decays else tf.zeros([], dtype)
        index = self._index_dict[self._var_key(variable)]
        if isinstance(gradient, tf.IndexedSlices):  # deduplicated by `apply_gradients`
            gradient = tf.scatter_nd(tf.expand_dims(gradient.indices, -1), gradient.values,
                                     tf.shape(variable, out_type=gradient.indices.dtype))
        _fused_update(variable, _local(self._momentums[index], variable),
                      _local(self._velocities[index], variable),
                      tf.cast(gradient, dtype), alpha, decay, beta_1, beta_2,
                      tf.cast(self.epsilon, dtype))
