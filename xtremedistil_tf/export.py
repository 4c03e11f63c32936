"""Exporting a tagger as a TF Serving SavedModel (`saved_models/<name>/<version>/`).

The `serving_default` signature takes `input_ids` and `attention_mask` (int32 `[batch, tokens]`)
and returns `label_ids` (int32 `[batch, tokens]`; Viterbi-decoded for CRF heads) and
`probabilities` (float32 `[batch, tokens, labels]`; softmax of the logits, or for CRF heads the
chain's posterior marginals at real sub-words). `assets/labels.txt` lists label names in id order and the tokenizer
files sit beside it, so a client that never imports this package can tokenize and read tags.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import tensorflow as tf

LABELS_FILE = "labels.txt"


class _Tagger(tf.Module):
    """The exported object: the model, its signature and its assets."""

    def __init__(self, model, asset_paths):
        super().__init__()
        self.model = model
        self.assets = [tf.saved_model.Asset(p) for p in asset_paths]

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.int32, name="input_ids"),
            tf.TensorSpec([None, None], tf.int32, name="attention_mask"),
        ]
    )
    def serve(self, input_ids, attention_mask):
        logits = self.model(
            {"input_ids": input_ids, "attention_mask": attention_mask}, training=False
        )["logits"]
        return {
            "label_ids": self.model.decode(logits, input_ids, attention_mask),
            "probabilities": self.model.probabilities(logits, input_ids, attention_mask),
        }


def next_version(base: str) -> int:
    """1 + the largest integer-named version folder under `base` (1 when there is none)."""
    if not os.path.isdir(base):
        return 1
    versions = [int(d) for d in os.listdir(base) if d.isdigit()]
    return max(versions, default=0) + 1


def export(model, labels, tokenizer, export_dir: str, name: str, version: int | None = None) -> str:
    """Writes the SavedModel to `export_dir/name/version` atomically and returns that path.

    Args:
        model: a `TokenClassifier`.
        labels: label names in id order.
        tokenizer: the Hugging Face tokenizer the model reads (saved into `assets/`).
        export_dir: the model base folder (TF Serving's `--model_base_path` parent).
        name: model name (a folder).
        version: version number; default the next free one. An existing version is never
            overwritten.

    Raises:
        FileExistsError: `version` already exists.
    """
    base = os.path.join(export_dir, name)
    version = version or next_version(base)
    final = os.path.join(base, str(version))
    if os.path.exists(final):
        raise FileExistsError(f"{final} exists; exported versions are never overwritten")
    os.makedirs(base, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{version}-", dir=base)
    try:
        files_dir = os.path.join(staging, "files")
        os.makedirs(files_dir)
        with open(os.path.join(files_dir, LABELS_FILE), "w", encoding="utf-8") as f:
            f.write("".join(label + "\n" for label in labels))
        tokenizer.save_pretrained(files_dir)
        paths = sorted(os.path.join(files_dir, p) for p in os.listdir(files_dir))
        module = _Tagger(model, paths)
        saved = os.path.join(staging, "model")
        tf.saved_model.save(module, saved, signatures={"serving_default": module.serve})
        os.replace(saved, final)  # TF Serving never sees a half-written version
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
