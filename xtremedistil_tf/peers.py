"""Runtimes the benchmark times next to TensorFlow on the same model: LiteRT (our export, float32
and dynamic-range int8) and OpenVINO (reading the SavedModel). Each is built from a
`TokenClassifier` and returns `fn(input_ids, attention_mask) -> {"label_ids", "probabilities"}`
on int32 numpy arrays, plus the size of what it runs.

(The PyTorch and ONNX Runtime peers, which need the model rebuilt in PyTorch, live in
`benchmark`.)
"""

from __future__ import annotations

import importlib.util

import numpy as np

LITERT_MODES = {"litert": "none", "litert_int8": "dynamic_int8"}


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def _labels(num_labels: int) -> list[str]:
    return [f"L{i}" for i in range(num_labels)]


def litert_callable(model, quantize: str, workdir: str, tokenizer,
                    threads: int | None = None):
    """`(fn, file size in MB)`: `model` exported by `litert.export` into `workdir` and run by
    `litert.Model` (XNNPACK, `threads` threads; default every CPU)."""
    from xtremedistil_tf import litert

    path = litert.export(model, _labels(model.num_labels), tokenizer, workdir, model.name,
                         version=1, quantize=quantize)
    runner = litert.Model(path, num_threads=threads)
    return runner, runner.size_bytes / 1e6


def openvino_callable(saved_model: str, threads: int):
    """`(fn, None)`: the SavedModel at `saved_model` converted by `openvino.convert_model`
    (dynamic batch and length) and compiled for OpenVINO's CPU plugin with `threads` inference
    threads and float32 precision (no bf16 / int8 downcast of its own)."""
    import openvino

    core = openvino.Core()
    converted = openvino.convert_model(saved_model)
    compiled = core.compile_model(converted, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                     "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    names = {}
    for output in compiled.outputs:
        for name in output.get_names():
            for key in ("label_ids", "probabilities"):
                if key in name:
                    names[key] = output
    if set(names) != {"label_ids", "probabilities"}:
        raise RuntimeError(f"openvino: outputs {[o.get_names() for o in compiled.outputs]} "
                           "do not name label_ids and probabilities")
    inputs = {}
    for port in compiled.inputs:
        for name in port.get_names():
            for key in ("input_ids", "attention_mask"):
                if key in name:
                    inputs[key] = port

    def fn(input_ids, attention_mask):
        result = request.infer({inputs["input_ids"]: np.asarray(input_ids, np.int32),
                                inputs["attention_mask"]: np.asarray(attention_mask, np.int32)})
        return {k: np.asarray(result[port]) for k, port in names.items()}

    return fn, None
