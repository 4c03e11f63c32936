"""Running a model over batches and reading its outputs back per word and per sentence."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from xtremedistil_tf import features, losses


def make_forward(model, hidden_layers: Sequence[int] = (), xla: bool = False,
                 with_aux: bool = False):
    """A compiled forward pass returning word-level `logits`, `label_ids` (and `hidden`).

    Args:
        model: a `TokenClassifier`.
        hidden_layers: indices into `hidden_states` (0 = embeddings) to return, stacked as
            `[B, W, len(hidden_layers), H]` under `hidden`.
        xla: compile with XLA (faster on GPUs; slower on this kind of CPU).
        with_aux: also return the per-layer classifiers' word logits as `aux_logits`
            `[B, W, n_aux, K]` (for distillers that learn every layer's distribution).
    """
    layers = tuple(hidden_layers)

    ids = tf.TensorSpec([None, None], tf.int32)

    @tf.function(input_signature=[ids, ids, ids], jit_compile=xla, autograph=False)
    def forward(input_ids, attention_mask, word_index):
        out = model({"input_ids": input_ids, "attention_mask": attention_mask},
                    training=False, output_hidden_states=bool(layers))
        ids = model.decode(out["logits"], input_ids, attention_mask)  # Viterbi for CRF heads
        result = {"logits": losses.gather_words(out["logits"], word_index),
                  "label_ids": losses.gather_words(ids, word_index)}
        if layers:
            hs = [losses.gather_words(out["hidden_states"][i], word_index) for i in layers]
            result["hidden"] = tf.stack(hs, axis=2)
        if with_aux and "aux_logits" in out:
            aux = [losses.gather_words(x, word_index) for x in out["aux_logits"]]
            result["aux_logits"] = tf.stack(aux, axis=2)
        return result

    return forward


def make_cls(model, xla: bool = False):
    """A compiled forward pass returning the last layer's first-position vectors `[B, H]`."""
    ids = tf.TensorSpec([None, None], tf.int32)

    @tf.function(input_signature=[ids, ids], jit_compile=xla, autograph=False)
    def cls(input_ids, attention_mask):
        out = model({"input_ids": input_ids, "attention_mask": attention_mask},
                    training=False, output_hidden_states=True)
        return out["hidden_states"][-1][:, 0]

    return cls


def word_outputs(forward, batches: Sequence[dict], n_windows: int) -> dict[str, list[np.ndarray]]:
    """Runs `forward` over batches; returns per-window word arrays (`[W, ...]`) per output key."""
    per_key: dict[str, list] = {}
    for batch in batches:
        out = forward(batch["input_ids"], batch["attention_mask"], batch["word_index"])
        for key, value in out.items():
            slots = per_key.setdefault(key, [None] * n_windows)
            for w, arr in features.batch_rows(batch, value.numpy()):
                slots[w] = arr
    return per_key


def sentence_outputs(
    forward, windows: Sequence[features.Window], batches: Sequence[dict], lengths: Sequence[int]
) -> dict[str, list[np.ndarray]]:
    """Like `word_outputs`, merged back to one `[n_words, ...]` array per sentence."""
    per_window = word_outputs(forward, batches, len(windows))
    return {
        key: features.merge_windows(windows, arrays, len(lengths), lengths)
        for key, arrays in per_window.items()
    }


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis (numpy)."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
