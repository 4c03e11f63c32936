"""Exporting a tagger as a Hugging Face token-classification folder
(`saved_models/<name>-hf/<version>/`).

The folder is what `transformers` loads as a token classifier, in TensorFlow and in PyTorch:

    config.json          the encoder's config + id2label / label2id, architectures
                         ["BertForTokenClassification"] (or XLMRoberta..., as the encoder is)
    tf_model.h5          TF weights (TFAutoModelForTokenClassification)
    model.safetensors    the same weights with PyTorch names and layouts (AutoModelFor...),
                         written with safetensors.numpy: torch is not needed to write it
    tokenizer files      the model's fast tokenizer
    labels.txt           label names in id order (as in the SavedModel's assets)

so `transformers.pipeline("token-classification", model=<folder>)` tags text. Only a plain
softmax classifier on the last hidden state has a Hugging Face class: students with a CRF or
attention head are refused (export those as SavedModels). The distillation projection and
per-layer classifiers are not part of tagging and are left out.
"""

from __future__ import annotations

import os

import numpy as np

from xtremedistil_tf import export_folders


def check_exportable(model) -> None:
    """Fails (one line) for a model Hugging Face has no token-classification class for."""
    if model.head_kind != "softmax":
        raise ValueError(
            f"--format hf: the model's {model.head_kind} head has no Hugging Face class (only a "
            "softmax classifier on the last hidden state has); export a SavedModel instead "
            "(--format savedmodel)")


def _relative(name: str, prefix: str) -> str:
    """A variable name below the main layer: ".../bert/encoder/..." -> "encoder/..."."""
    name = name.split(":")[0]
    parts = name.split("/")
    if prefix not in parts:
        raise ValueError(f"cannot place weight {name} (no {prefix}/ in its name)")
    return "/".join(parts[parts.index(prefix) + 1:])


def hf_token_classifier(model, labels):
    """A `TF*ForTokenClassification` with the encoder and classifier weights of `model`."""
    import tensorflow as tf
    import transformers

    check_exportable(model)
    cfg = model.encoder.config.__class__.from_dict(model.encoder.config.to_dict())
    cfg.id2label = dict(enumerate(labels))
    cfg.label2id = {label: i for i, label in enumerate(labels)}
    cfg.num_labels = len(labels)
    hf = transformers.TFAutoModelForTokenClassification.from_config(cfg)
    hf.config.architectures = [type(hf).__name__.removeprefix("TF")]
    ids = tf.ones((1, 4), tf.int32)
    hf(input_ids=ids, attention_mask=ids)
    prefix = hf.base_model_prefix
    mine = {_relative(v.name, prefix): v for v in model.encoder.weights
            if "pooler" not in v.name}
    main = getattr(hf, prefix)
    values = []
    for v in main.weights:
        key = _relative(v.name, prefix)
        if key not in mine or tuple(mine[key].shape) != tuple(v.shape):
            raise ValueError(f"--format hf: the encoder has no weight {key} of shape {v.shape}; "
                             "only Hugging Face encoders export")
        values.append(mine[key].numpy())
    main.set_weights(values)
    hf.classifier.set_weights(model.classifier.get_weights())
    return hf


def pytorch_state_dict(hf) -> dict[str, np.ndarray]:
    """The weights of a TF Hugging Face model with PyTorch names and layouts (kernels
    transposed), as `transformers`' own TF->PyTorch conversion names them."""
    from transformers.modeling_tf_pytorch_utils import convert_tf_weight_name_to_pt_weight_name

    state = {}
    for v in hf.weights:
        name, transpose = convert_tf_weight_name_to_pt_weight_name(
            v.name, tf_weight_shape=v.shape)
        value = v.numpy()
        if transpose.name == "SIMPLE":
            value = value.T
        state[name] = np.ascontiguousarray(value)
    return state


def export_hf(model, labels, tokenizer, export_dir: str, name: str,
              version: int | None = None) -> str:
    """Writes the Hugging Face folder to `export_dir/name/version` atomically; returns it.

    Raises:
        ValueError: a head Hugging Face has no class for (see `check_exportable`).
        FileExistsError: `version` already exists.
    """
    from safetensors.numpy import save_file

    check_exportable(model)
    final = export_folders.version_folder(export_dir, name, version)
    hf = hf_token_classifier(model, labels)
    with export_folders.new_version(final) as staging:
        folder = os.path.join(staging, "model")
        hf.save_pretrained(folder, safe_serialization=False)  # config.json + tf_model.h5
        save_file(pytorch_state_dict(hf), os.path.join(folder, "model.safetensors"),
                  metadata={"format": "pt"})
        export_folders.write_assets(folder, labels, tokenizer)  # tokenizer + labels.txt
    return final
