"""LiteRT (TFLite) export and runtime: `saved_models/<name>-litert[-int8]/<version>/model.tflite`.

The file has one signature, `serving_default`, that mirrors the SavedModel's: `input_ids` and
`attention_mask` (int32 `[batch, tokens]`, any batch and any length) in, `label_ids` (int32
`[batch, tokens]`; Viterbi-decoded for CRF heads) and `probabilities` (float32
`[batch, tokens, labels]`) out. Its inputs are dynamic, and the runtime resizes them per call:
signatures per length bucket (dynamic batch) measured no faster; only a file fixed to one batch
and length is, at 1 x 32 (see docs/litert.md). The version folder also holds `assets/`
(labels.txt and the tokenizer files, as in the SavedModel) and `litert.json` (vocabulary size
and position limit, which the runtime checks inputs against: a `.tflite` graph has no
assertions).

Quantization: `none` (float32) or `dynamic_int8` (weights stored as int8 and dequantized or
used by hybrid kernels at run time, activations float32; no representative data needed).

Every head converts with builtin ops only: the CRF's Viterbi and forward-backward recursions
are traced under `crf.without_tensor_lists()`, because the converter cannot lower the
TensorArrays of a `tf.scan` whose batch is dynamic.

Runtime: `ai-edge-litert` (`ai_edge_litert.interpreter`), else `tf.lite.Interpreter`, with the
XNNPACK delegate (their default) on every CPU this process may use.

    python -m xtremedistil_tf.export --run_dir runs/default --format litert \\
        [--quantize none|dynamic_int8]
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator

import numpy as np

import xtremedistil_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf

from xtremedistil_tf import export_folders, savedmodel

QUANTIZE = ("none", "dynamic_int8")
MODEL_FILE = "model.tflite"
INFO_FILE = "litert.json"
FORMAT = "litert"


class ConversionError(ValueError):
    """The model has an op the LiteRT converter cannot express with builtin ops."""


def folder_name(name: str, quantize: str = "none") -> str:
    """`<name>-litert`, or `<name>-litert-int8` for dynamic-range int8."""
    return f"{name}-{FORMAT}" + ("-int8" if quantize == "dynamic_int8" else "")


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Sends file descriptor 2 (where the converter's C++ diagnostics go) to a buffer whose
    text is appended to the yielded list when the block ends."""
    captured: list[str] = []
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as buf:
        os.dup2(buf.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            captured.append(buf.read().decode("utf-8", "replace"))


def _first_error(text: str) -> str:
    """The converter's first `error: ...` diagnostic, without its source location."""
    for line in text.splitlines():
        m = re.search(r"error: (.+)$", line)
        if m and "failed while converting" not in m.group(1):
            return m.group(1).strip()
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[0] if lines else "unknown converter error"


def convert(model, quantize: str = "none", batch: int | None = None,
            length: int | None = None) -> bytes:
    """The `.tflite` flatbuffer of a `TokenClassifier`'s serving computation.

    Args:
        model: a `TokenClassifier` (float32; any head).
        quantize: `none` or `dynamic_int8`.
        batch, length: fixed input shape (None: resized at run time, what exports use).

    Raises:
        ConversionError: an op has no builtin LiteRT kernel (the message names it).
    """
    from xtremedistil_tf import crf

    if quantize not in QUANTIZE:
        raise ValueError(f"--quantize={quantize}: use one of {', '.join(QUANTIZE)}")
    spec = [tf.TensorSpec([batch, length], tf.int32, name="input_ids"),
            tf.TensorSpec([batch, length], tf.int32, name="attention_mask")]
    serve = tf.function(lambda input_ids, attention_mask: savedmodel.serving_outputs(
        model, input_ids, attention_mask), input_signature=spec, autograph=False)
    with crf.without_tensor_lists():
        concrete = serve.get_concrete_function()
    # The converter saves the function beside this object: the weights only (not the Keras
    # model, whose saving traces every layer's call).
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [concrete], savedmodel.weights_module(model))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        with _captured_stderr() as log:
            content = converter.convert()
    except Exception as e:  # the converter raises ConverterError and others
        raise ConversionError(f"{model.name}: cannot convert to LiteRT ({quantize}): "
                              f"{_first_error(str(e) + chr(10) + ''.join(log))}") from None
    return content


def export(model, labels, tokenizer, export_dir: str, name: str, version: int | None = None,
           quantize: str = "none") -> str:
    """Writes `export_dir/<name>-litert[-int8]/<version>/` atomically; returns that folder.

    The folder holds `model.tflite`, `litert.json` and `assets/` (labels and tokenizer files,
    as in the SavedModel). Converts before writing anything, so a model that cannot convert
    leaves no folder behind.

    Raises:
        FileExistsError: `version` already exists (versions are never overwritten).
        ConversionError: see `convert`.
    """
    final = export_folders.version_folder(export_dir, folder_name(name, quantize), version)
    content = convert(model, quantize)
    info = {"format": FORMAT, "quantize": quantize, "head": model.head_kind,
            "vocab_size": int(model.encoder.config.vocab_size),
            "max_positions": savedmodel.max_positions(model), "labels": len(labels)}
    with export_folders.new_version(final) as staging:
        folder = os.path.join(staging, "model")
        export_folders.write_assets(os.path.join(folder, "assets"), labels, tokenizer)
        with open(os.path.join(folder, MODEL_FILE), "wb") as f:
            f.write(content)
        with open(os.path.join(folder, INFO_FILE), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=1)
    return final


def is_litert(folder: str) -> bool:
    """Whether `folder` is a LiteRT export version folder."""
    return os.path.isfile(os.path.join(folder, MODEL_FILE))


def interpreter_class():
    """`ai_edge_litert.interpreter.Interpreter`, or `tf.lite.Interpreter` without it."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    return Interpreter


def cpu_count() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


class Model:
    """A `model.tflite` called like `serving_default`, with the SavedModel's input checks.

    Args:
        path: a LiteRT version folder (with `litert.json`) or a bare `.tflite` file (then the
            inputs are not range-checked).
        num_threads: XNNPACK threads (default: every CPU this process may use).
    """

    def __init__(self, path: str, num_threads: int | None = None):
        file = os.path.join(path, MODEL_FILE) if os.path.isdir(path) else path
        if not os.path.isfile(file):
            raise ValueError(f"{path}: no {MODEL_FILE}; give a <name>-litert/<version> folder")
        self.info = {}
        info = os.path.join(os.path.dirname(file), INFO_FILE)
        if os.path.isfile(info):
            with open(info, encoding="utf-8") as f:
                self.info = json.load(f)
        self.path = file
        self.size_bytes = os.path.getsize(file)
        self.interpreter = interpreter_class()(model_path=file,
                                               num_threads=num_threads or cpu_count())
        self._run = self.interpreter.get_signature_runner("serving_default")

    def check(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> None:
        """The checks `serving_default` makes, as `ValueError`s with the same advice."""
        if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
            raise ValueError("input_ids and attention_mask must have the same shape "
                             f"[batch, tokens], got {input_ids.shape} and {attention_mask.shape}")
        limit = self.info.get("max_positions")
        if limit and input_ids.shape[1] > limit:
            raise ValueError(f"at most {limit} tokens per sequence; split longer sentences "
                             "into windows")
        vocab = self.info.get("vocab_size")
        if input_ids.size and (input_ids.min() < 0 or (vocab and input_ids.max() >= vocab)):
            raise ValueError(f"input_ids must be >= 0 and < {vocab} (the vocabulary size); is "
                             "the client using the tokenizer in assets/?")

    def __call__(self, input_ids, attention_mask) -> dict[str, np.ndarray]:
        """`{"label_ids": int32 [B, T], "probabilities": float32 [B, T, K]}` (numpy)."""
        input_ids = np.ascontiguousarray(input_ids, np.int32)
        attention_mask = np.ascontiguousarray(attention_mask, np.int32)
        self.check(input_ids, attention_mask)
        return self._run(input_ids=input_ids, attention_mask=attention_mask)
