"""The CRF as a Keras layer (its transition, start and end scores) and the IOB2 constraints
applied when it decodes; the chain's algorithms are `crf`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from xtremedistil_tf import crf


def iob2_allowed(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Transition constraints of IOB2: `I-X` may only follow `B-X` or `I-X`.

    Forbids `O -> I-X`, `B-X -> I-Y` and `I-X -> I-Y` (Y != X), and starting with `I-X`. Labels
    that do not start with `I-` are unconstrained as targets; as sources, only `B-X` / `I-X`
    open an `I-X`.

    Args:
        labels: tag names in id order, e.g. `["O", "B-PER", "I-PER"]`.

    Returns:
        `(allowed [K, K] bool, allowed_start [K] bool)`, `allowed[i, j]` = j may follow i.
    """

    def split(label: str) -> tuple[str, str | None]:
        if label[:2] in ("B-", "I-"):
            return label[0], label[2:]
        return label, None

    parsed = [split(label) for label in labels]
    allowed = np.ones((len(labels), len(labels)), bool)
    allowed_start = np.ones(len(labels), bool)
    for j, (prefix_j, type_j) in enumerate(parsed):
        if prefix_j != "I":
            continue
        allowed_start[j] = False
        for i, (_, type_i) in enumerate(parsed):
            allowed[i, j] = type_i == type_j
    return allowed, allowed_start


def _as_bool_lists(value) -> list | None:
    return None if value is None else np.asarray(value, bool).tolist()


class CRF(tf.keras.layers.Layer):
    """Holds CRF parameters; the chain itself lives in the methods, not in `call`.

    `call` is the identity on the emissions so that the model decides what to do with them in
    each mode (loss via `log_likelihood` while training, `decode` or `marginals` at inference).

    Args:
        num_tags: K.
        use_boundary: learn `start` and `end` `[K]` scores as well as `transitions` `[K, K]`.
        allowed_transitions: optional `[K, K]` nested list of bools applied at decode time
            (e.g. `iob2_allowed(labels)[0]`); training still sees the unrestricted chain.
        allowed_start: optional `[K]` list of bools, tags a sequence may start with at decode.
        **kwargs: `tf.keras.layers.Layer` arguments; `autocast` defaults to False so that a
            mixed-precision policy does not round the emissions passing through `call`.
    """

    def __init__(
        self,
        num_tags: int,
        use_boundary: bool = True,
        allowed_transitions: Sequence[Sequence[bool]] | np.ndarray | None = None,
        allowed_start: Sequence[bool] | np.ndarray | None = None,
        **kwargs,
    ):
        # Under a mixed-precision policy Keras would round float32 classifier outputs to
        # bfloat16 on the way into `call`; the CRF is meant to see (and pass on) them as they are.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.num_tags = int(num_tags)
        self.use_boundary = bool(use_boundary)
        self.allowed_transitions = _as_bool_lists(allowed_transitions)
        self.allowed_start = _as_bool_lists(allowed_start)
        if self.allowed_transitions is not None and np.shape(self.allowed_transitions) != (
            self.num_tags,
            self.num_tags,
        ):
            raise ValueError(
                f"allowed_transitions must be [{self.num_tags}, {self.num_tags}], "
                f"got shape {np.shape(self.allowed_transitions)}"
            )
        if self.allowed_start is not None and np.shape(self.allowed_start) != (self.num_tags,):
            raise ValueError(
                f"allowed_start must be [{self.num_tags}], got {np.shape(self.allowed_start)}"
            )
        self.supports_masking = True
        self.start = None
        self.end = None

    def build(self, input_shape=None):
        if input_shape is not None and input_shape[-1] not in (None, self.num_tags):
            raise ValueError(
                f"CRF(num_tags={self.num_tags}) got emissions with last dimension "
                f"{input_shape[-1]}; make the classifier output num_tags scores"
            )
        self.transitions = self.add_weight(
            name="transitions", shape=(self.num_tags, self.num_tags), initializer="zeros"
        )
        if self.use_boundary:
            self.start = self.add_weight(name="start", shape=(self.num_tags,), initializer="zeros")
            self.end = self.add_weight(name="end", shape=(self.num_tags,), initializer="zeros")
        super().build(input_shape)

    def _ensure_built(self, emissions) -> None:
        # The methods may run before the layer was ever called (e.g. straight after loading).
        if not self.built:
            self.build(tf.TensorShape(emissions.shape))

    def call(self, emissions, mask=None, training=False):
        """Returns `emissions` `[B, T, K]` unchanged; the Keras mask propagates."""
        return emissions

    def log_likelihood(self, emissions, tags, mask=None) -> tf.Tensor:
        """`[B]` log p(tags | emissions); see `crf_log_likelihood`."""
        self._ensure_built(emissions)
        return crf.crf_log_likelihood(emissions, tags, mask, self.transitions, self.start, self.end)

    def decode(self, emissions, mask=None) -> tuple[tf.Tensor, tf.Tensor]:
        """`(tags [B, T] int32, score [B])` under the allowed transitions; see `crf_decode`."""
        self._ensure_built(emissions)
        return crf.crf_decode(
            emissions,
            mask,
            self.transitions,
            self.start,
            self.end,
            allowed=self.allowed_transitions,
            allowed_start=self.allowed_start,
        )

    def marginals(self, emissions, mask=None) -> tf.Tensor:
        """`[B, T, K]` posterior marginals; see `crf_marginals`."""
        self._ensure_built(emissions)
        return crf.crf_marginals(emissions, mask, self.transitions, self.start, self.end)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            num_tags=self.num_tags,
            use_boundary=self.use_boundary,
            allowed_transitions=self.allowed_transitions,
            allowed_start=self.allowed_start,
        )
        return config
