"""Runtimes the benchmark times next to TensorFlow on the same model: LiteRT (our export, float32
and dynamic-range int8), OpenVINO (reading the SavedModel), and PyTorch and ONNX Runtime (the
model rebuilt in PyTorch from its TensorFlow weights, `torch_tagger`). Each callable maps
`(input_ids, attention_mask)` numpy arrays to `{"label_ids", "probabilities"}`.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import numpy as np

LITERT_MODES = {"litert": "none", "litert_int8": "dynamic_int8"}
ONNX_OPSET = 17


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


def torch_tagger(model):
    """The model as a `torch.nn.Module`: `(input_ids, attention_mask) -> (label_ids,
    probabilities)`, in eval mode, on the TensorFlow model's weights.

    The encoder is the Hugging Face PyTorch class of the same config, filled from the
    encoder's variables in memory by transformers' TF 2 -> PyTorch converter
    (`load_tf2_weights_in_pytorch_model`; a weight it cannot place is an error). Not via
    `save_pretrained` + `from_pretrained(..., from_tf=True)`: with transformers 4.54.1 and
    torch 2.13 that leaves the weights on the meta device. The head is a `Linear` with the
    softmax head's kernel (transposed) and bias; its dropout is inactive in eval mode.
    """
    import torch
    import transformers
    from transformers.modeling_tf_pytorch_utils import load_tf2_weights_in_pytorch_model

    if model.head.attention is not None or model.head.crf is not None:
        raise ValueError(f"peers copy softmax heads only, not {model.head_kind}")
    encoder = transformers.AutoModel.from_config(
        model.encoder.config, add_pooling_layer=getattr(model.encoder, "pooler", None) is not None)
    _, info = load_tf2_weights_in_pytorch_model(encoder, model.encoder.weights,
                                                output_loading_info=True)
    if info["missing_keys"] or info["unexpected_keys"]:
        raise ValueError(f"{model.name}: PyTorch weights without a TensorFlow value "
                         f"{info['missing_keys']}, TensorFlow weights unused "
                         f"{info['unexpected_keys']}")
    classifier = torch.nn.Linear(model.hidden_size, model.num_labels)
    with torch.no_grad():
        classifier.weight.copy_(torch.from_numpy(model.classifier.kernel.numpy().T))
        classifier.bias.copy_(torch.from_numpy(model.classifier.bias.numpy()))

    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.classifier = classifier

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids,
                                  attention_mask=attention_mask).last_hidden_state
            logits = self.classifier(hidden)
            return logits.argmax(-1), torch.softmax(logits.float(), -1)

    return Tagger().eval()


def torch_callable(tagger, dtype: str, threads: int):
    """`fn(input_ids, attention_mask)` (int64 numpy) -> label ids and probabilities, under
    `torch.inference_mode()` on `threads` threads; bfloat16 under `torch.autocast("cpu")`."""
    import contextlib

    import torch

    torch.set_num_threads(threads)

    def precision():
        if dtype == "bfloat16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def fn(input_ids, attention_mask):
        with torch.inference_mode(), precision():
            label_ids, probabilities = tagger(torch.from_numpy(input_ids),
                                              torch.from_numpy(attention_mask))
        return {"label_ids": label_ids, "probabilities": probabilities}

    return fn


def onnxruntime_callable(tagger, path: str, threads: int):
    """`fn(input_ids, attention_mask)` (int64 numpy) -> label ids and probabilities from the
    module exported to `path` (opset 17, dynamic batch and sequence axes) and run by ONNX
    Runtime's CPU provider with default graph optimizations on `threads` intra-op threads."""
    import onnxruntime
    import torch

    names = ("input_ids", "attention_mask", "label_ids", "probabilities")
    dummy = torch.ones((2, 8), dtype=torch.int64)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter (dynamo=False: the default torch.export-based one needs
        # onnxscript) warns that it is deprecated, and transformers' mask code that it traces
        # a constant; neither changes the graph.
        warnings.simplefilter("ignore")
        torch.onnx.export(tagger, (dummy, dummy), path, input_names=list(names[:2]),
                          output_names=list(names[2:]), opset_version=ONNX_OPSET, dynamo=False,
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names})
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def fn(input_ids, attention_mask):
        outputs = session.run(list(names[2:]), {"input_ids": input_ids,
                                                "attention_mask": attention_mask})
        return dict(zip(names[2:], outputs))

    return fn
