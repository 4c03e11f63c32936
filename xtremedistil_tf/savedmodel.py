"""The TF Serving SavedModel of a tagger (`saved_models/<name>/<version>/`).

The `serving_default` signature takes `input_ids` and `attention_mask` (int32 `[batch, tokens]`)
and returns `label_ids` (int32 `[batch, tokens]`; Viterbi-decoded for CRF heads) and
`probabilities` (float32 `[batch, tokens, labels]`; softmax of the logits, or for CRF heads the
chain's posterior marginals at real sub-words). `assets/labels.txt` lists label names in id
order and the tokenizer files sit beside it, so a client that never imports this package can
tokenize and read tags. It uses core TensorFlow ops only.

With `text_signature=True` the same SavedModel also has `tag_text` (see `serving_text`): a batch
of sentences in (string `[batch]`), `words`, `tags` (string `[batch, max_words]`, "" padded) and
`scores` out, tokenized in the graph by tensorflow-text. Its ops are then part of the SavedModel,
so *loading it at all* needs them: `import tensorflow_text` before `tf.saved_model.load`, and a
TF Serving build that links the same tensorflow-text ops. That is why it is off by default.

Every export rewrites `<export_dir>/models.config` (`export_folders`).
"""

from __future__ import annotations

import os

import xtremedistil_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf

from xtremedistil_tf import export_folders


def max_positions(model) -> int:
    """Tokens per sequence the encoder's position embeddings allow."""
    from xtremedistil_tf import models

    return models.max_positions(model.encoder.config)


def serving_outputs(model, input_ids, attention_mask) -> dict:
    """What `serving_default` returns, without its input checks (every export format's graph).

    Returns:
        `label_ids` int32 `[B, T]` (Viterbi for CRF heads) and `probabilities` float32
        `[B, T, K]`; bfloat16 models decode in float32.
    """
    logits = model({"input_ids": input_ids, "attention_mask": attention_mask},
                   training=False)["logits"]
    logits = tf.cast(logits, tf.float32)
    return {"label_ids": model.decode(logits, input_ids, attention_mask),
            "probabilities": model.probabilities(logits, input_ids, attention_mask)}


def weights_module(model) -> tf.Module:
    """A `tf.Module` that tracks `model`'s weights and not the Keras model itself (see `_Tagger`):
    what a converter that saves a function needs beside it."""
    module = tf.Module()
    module.model_weights = list(model.weights)
    return module


class _Tagger(tf.Module):
    """The exported object: the model's weights, its `serving_default` signature, its assets."""

    def __init__(self, model, asset_paths):
        super().__init__()
        # The weights are tracked, not the Keras model: a Keras model inside a tf.Module is
        # saved with every layer's own call functions, traced one by one (6 s instead of 1 s
        # for the tiny test model, far more for a 12-layer one, and 3x the files) for a
        # SavedModel that is only ever read through its signatures.
        object.__setattr__(self, "_model", model)
        self.model_weights = list(model.weights)
        self.assets = [tf.saved_model.Asset(p) for p in asset_paths]
        self._vocab_size = int(model.encoder.config.vocab_size)
        self._max_positions = max_positions(model)

    def _forward(self, input_ids, attention_mask):
        # Clear messages for inputs TF Serving clients get wrong; without them the failure is
        # an opaque gather or matmul error deep in the encoder.
        same_shape = tf.debugging.assert_equal(
            tf.shape(input_ids), tf.shape(attention_mask),
            message="input_ids and attention_mask must have the same shape [batch, tokens]")
        # The other checks read input_ids after this one: a wrongly shaped input then always
        # fails here, not (depending on op scheduling) inside another check's reduction.
        with tf.control_dependencies([same_shape]):
            input_ids = tf.identity(input_ids)
        checks = [
            tf.debugging.assert_less_equal(
                tf.shape(input_ids)[1], self._max_positions,
                message=f"at most {self._max_positions} tokens per sequence; split longer "
                        "sentences into windows"),
            tf.debugging.assert_non_negative(input_ids, message="input_ids must be >= 0"),
            tf.debugging.assert_less(
                input_ids, self._vocab_size,
                message=f"input_ids must be < {self._vocab_size} (the vocabulary size); is the "
                        "client using the tokenizer in assets/?"),
        ]
        with tf.control_dependencies(checks):
            input_ids = tf.identity(input_ids)
        return serving_outputs(self._model, input_ids, attention_mask)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.int32, name="input_ids"),
            tf.TensorSpec([None, None], tf.int32, name="attention_mask"),
        ],
        autograph=False,
    )
    def serve(self, input_ids, attention_mask):
        return self._forward(input_ids, attention_mask)


class _TextTagger(_Tagger):
    """`_Tagger` plus the `tag_text` signature (tensorflow-text ops)."""

    def __init__(self, model, asset_paths, labels, tokenizer, max_seq_length):
        from xtremedistil_tf import serving_text

        super().__init__(model, asset_paths)
        self.text_tokenizer = serving_text.make_tokenizer(
            serving_text.tokenizer_settings(tokenizer))
        self._ids = {"cls": tokenizer.cls_token_id, "sep": tokenizer.sep_token_id,
                     "pad": tokenizer.pad_token_id, "unk": tokenizer.unk_token_id}
        self._labels = list(labels)
        self._max_seq_length = min(max_seq_length, self._max_positions)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")],
                 autograph=False)
    def tag_text(self, sentences):
        from xtremedistil_tf import serving_text

        inputs = serving_text.build_inputs(sentences, self.text_tokenizer, self._ids,
                                           self._max_seq_length)
        out = self._forward(inputs["input_ids"], inputs["attention_mask"])
        return serving_text.word_outputs(inputs, out["label_ids"], out["probabilities"],
                                         tf.constant(self._labels))


def variables_mb(path: str) -> float:
    """Size of an export's weights (`variables/`), in MB (10^6 bytes)."""
    folder = os.path.join(path, "variables")
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) / 1e6


def export(model, labels, tokenizer, export_dir: str, name: str, version: int | None = None,
           text_signature: bool = False, max_seq_length: int = 512) -> str:
    """Writes the SavedModel to `export_dir/name/version` atomically and returns that path.

    Args:
        model: a `TokenClassifier`.
        labels: label names in id order.
        tokenizer: the Hugging Face tokenizer the model reads (saved into `assets/`).
        export_dir: the model base folder (TF Serving's `--model_base_path` parent).
        name: model name (a folder).
        version: version number; default the next free one. An existing version is never
            overwritten.
        text_signature: also add `tag_text` (needs tensorflow-text and a WordPiece vocabulary;
            the SavedModel then needs tensorflow-text ops to load at all, see the module doc).
        max_seq_length: sub-words per sentence in `tag_text`, special tokens included (capped
            by the model's position embeddings); later words are not tagged.

    Raises:
        FileExistsError: `version` already exists.
        serving_text.UnsupportedTokenizer: `text_signature` with a tokenizer it cannot mirror.
        ImportError: `text_signature` without tensorflow-text installed.
    """
    final = export_folders.version_folder(export_dir, name, version)
    if text_signature:
        from xtremedistil_tf import serving_text

        if not serving_text.available():
            raise ImportError("text_signature needs tensorflow-text: pip install "
                              "tensorflow-text==2.21.*")
        serving_text.tokenizer_settings(tokenizer)  # fails before any work if unsupported
    with export_folders.new_version(final) as staging:
        files_dir = os.path.join(staging, "files")
        paths = export_folders.write_assets(files_dir, labels, tokenizer)
        if text_signature:
            module = _TextTagger(model, paths, labels, tokenizer, max_seq_length)
            signatures = {"serving_default": module.serve, "tag_text": module.tag_text}
        else:
            module = _Tagger(model, paths)
            signatures = {"serving_default": module.serve}
        tf.saved_model.save(module, os.path.join(staging, "model"), signatures=signatures)
    export_folders.write_models_config(export_dir)
    return final
