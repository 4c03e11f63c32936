"""A model's folder: `save_weights` writes the weights with everything needed to rebuild the
model (its settings, the encoder's Hugging Face config, labels, tokenizer) and `load_model`
rebuilds it from the folder alone; `load_weights` restores into a model built the same way.
"""

from __future__ import annotations

import json
import os
import re

import tensorflow as tf
import transformers

from xtremedistil_tf import models

ENCODER_FILE = "encoder.json"  # written by `save_weights`, read by `load_model`
TOKENIZER_DIR = "tokenizer"  # the tokenizer a saved model reads, beside its weights



def save_weights(model: models.TokenClassifier, folder: str, labels: list[str] | None = None,
                 tokenizer=None) -> float:
    """Writes the model's weights (and label names) under `folder` atomically; returns MB.

    Next to the weights go `model.json` (the `models.TokenClassifier`'s settings), `encoder.json`
    (the encoder's Hugging Face config) and, when given, the tokenizer it reads (`tokenizer/`):
    `load_model` rebuilds the model from the folder alone.
    """
    tmp = folder + ".tmp"
    tf.io.gfile.makedirs(tmp)
    model.save_weights(os.path.join(tmp, "weights"))
    with open(os.path.join(tmp, "model.json"), "w") as f:
        json.dump(model.get_config(), f)
    with open(os.path.join(tmp, ENCODER_FILE), "w") as f:  # enough to rebuild it: `load_model`
        json.dump({"config": model.encoder.config.to_dict(),
                   "pooler": models.has_pooler(model.encoder)}, f, indent=1)
    if tokenizer is not None:
        tokenizer.save_pretrained(os.path.join(tmp, TOKENIZER_DIR))
    if labels is not None:
        with open(os.path.join(tmp, "labels.txt"), "w", encoding="utf-8") as f:
            f.write("".join(f"{label}\n" for label in labels))
    if tf.io.gfile.exists(folder):
        tf.io.gfile.rmtree(folder)
    os.replace(tmp, folder)
    return weights_size_mb(folder)


def weights_size_mb(folder: str) -> float:
    """Size on disk of the weight files in `folder`, in MB (10^6 bytes)."""
    total = sum(
        os.path.getsize(os.path.join(folder, f))
        for f in os.listdir(folder)
        if f.startswith("weights")
    )
    return total / 1e6


def check_compatible(model: models.TokenClassifier, folder: str, labels: list[str]) -> None:
    """Fails unless `folder` (from `save_weights`) holds weights for this model and these labels.

    Used before reusing another run's fine-tuned teacher (`--teacher_checkpoint`).
    """
    config_path = os.path.join(folder, "model.json")
    if not os.path.exists(config_path):
        raise ValueError(f"{folder}: no model.json; give the teacher/ folder of an earlier run "
                         "(<output_dir>/teacher)")
    with open(config_path, encoding="utf-8") as f:
        saved = json.load(f)
    mine = json.loads(json.dumps(model.get_config()))
    differ = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
    if differ:
        theirs = ", ".join(f"{k}={saved.get(k)}" for k in differ)
        ours = ", ".join(f"{k}={mine.get(k)}" for k in differ)
        raise ValueError(
            f"{config_path}: saved for another model ({theirs}; here {ours}); use the same "
            "--teacher, --head and --aux_heads as the run that wrote it")
    labels_path = os.path.join(folder, "labels.txt")
    if os.path.exists(labels_path):
        with open(labels_path, encoding="utf-8") as f:
            saved_labels = f.read().split()
        if saved_labels != list(labels):
            raise ValueError(
                f"{labels_path}: its labels {' '.join(saved_labels)} differ from this data's "
                f"{' '.join(labels)}; use training files with the same labels")


def load_weights(model: models.TokenClassifier, folder: str) -> None:
    """Restores weights written by `save_weights` into an identically built model.

    Raises:
        ValueError: a variable of the model has no value there (written by other code or
            another architecture) — never continue with half-random weights.
    """
    status = model.load_weights(os.path.join(folder, "weights"))
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        missing = re.findall(r"<tf.Variable '([^']+)'", str(e))
        raise ValueError(
            f"{folder}: the checkpoint has no values for {', '.join(missing[:3]) or 'some'} "
            "variables of this model; it was written by another version of xtremedistil_tf or "
            "with other settings: rerun the training, or use a new --output_dir") from None
    status.expect_partial()


def load_model(folder: str, name: str | None = None) -> tuple[models.TokenClassifier, list[str]]:
    """Rebuilds the model that `save_weights` wrote to `folder`, with its weights and labels.

    Needs nothing but the folder: no teacher, no data, no hub (its tokenizer, if saved, is
    `load_tokenizer(os.path.join(folder, TOKENIZER_DIR))`). `name` defaults to the folder's
    name (`teacher`, `student`).
    """
    needed = ("model.json", ENCODER_FILE, "labels.txt")
    missing = [f for f in needed if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise ValueError(f"{folder}: no {', '.join(missing)}; give a teacher/ or student/ "
                         "folder of a finished run (older versions did not write "
                         f"{ENCODER_FILE}: rerun the training there)")
    with open(os.path.join(folder, "model.json"), encoding="utf-8") as f:
        settings = json.load(f)
    with open(os.path.join(folder, ENCODER_FILE), encoding="utf-8") as f:
        saved = json.load(f)
    with open(os.path.join(folder, "labels.txt"), encoding="utf-8") as f:
        labels = [line.rstrip("\n") for line in f if line.strip()]
    config = dict(saved["config"])
    hf_config = transformers.AutoConfig.for_model(config.pop("model_type"), **config)
    encoder = models.encoder_from_config(hf_config, pooler=saved["pooler"])
    model = models.TokenClassifier(
        encoder, settings["num_labels"], settings["dropout"],
        projection_dim=settings["projection_dim"], head=settings["head"], labels=labels,
        special_ids=settings["special_ids"], aux_layers=settings["aux_layers"],
        name=name or os.path.basename(os.path.normpath(folder))).build_with_dummy()
    if model.num_labels != len(labels):
        raise ValueError(f"{folder}: labels.txt has {len(labels)} labels but the model "
                         f"{model.num_labels}; was the folder edited?")
    load_weights(model, folder)
    return model, labels
