"""Inference and training benchmark: teacher vs students, per execution mode and dtype, as a
fraction of peak, with LiteRT modes and optional PyTorch, ONNX Runtime and OpenVINO peers on the
same weights and inputs.

    python -m xtremedistil_tf.benchmark --output_dir results/benchmark \
        [--models mbert-base,xtremedistil-l6-h256,...] [--batch_sizes 32] [--seq_lengths 128] \
        [--modes eager,function,xla,saved_model,litert,litert_int8,train_representations,...] \
        [--dtypes float32,bfloat16] [--peers torch,onnxruntime,openvino] \
        [--repeats 5] [--warmup 2] [--peak_matmul_size 2048]

Every model is a `models.TokenClassifier` with a 9-label softmax head, and every inference mode
times the same computation the exported `serving_default` runs: encoder, head, `probabilities`
and `decode` (argmax), outputs copied to host. Models are named presets (random weights
built from configs, offline: `benchmark_models.PRESETS`) or local Hugging Face folders
(`models.load_encoder`). Every mode and peer of a model sees the same random token ids per
batch × length.

Inference modes: `eager` (Keras call), `function` (`tf.function`), `xla`
(`tf.function(jit_compile=True)`), `saved_model` (`export.export` to a temporary folder,
`tf.saved_model.load`, `serving_default`). LiteRT modes (float32 pass only, like peers):
`litert` and `litert_int8` (dtype `int8`: dynamic-range int8 weights) run `litert.export`'s
`model.tflite` in `litert.Model` (XNNPACK, the same thread count); their `size_mb` is the file's
size and the int8 row's `mfu` is against the float32 peak.

Training modes: `train_<objective>` for the distillation objectives `representations`,
`logits` and `labels` time one optimizer step of that stage with all its layers training
(`benchmark_modes.make_train_step`) on random inputs and random targets. Training FLOPs are
counted as 3 × forward FLOPs (the backward pass ≈ 2 × the forward), so their
`gflops_per_token` is 3 × the inference one and their `mfu` uses it.

Peers (`--peers`, after the TensorFlow inference modes, float32 pass only): `torch` is the
Hugging Face PyTorch model of the same config with the TensorFlow weights copied in, plus a
`torch.nn.Linear` head with the TensorFlow classifier's kernel and bias, softmax and argmax,
under `torch.inference_mode()` with `torch.set_num_threads` = TensorFlow's intra-op threads
(float32, and bfloat16 via `torch.autocast("cpu")` when `--dtypes` has it). `onnxruntime` runs
that module exported by `torch.onnx.export` (dynamic batch and sequence axes, opset 17) in an
`InferenceSession` (CPUExecutionProvider, default graph optimizations, the same thread count);
float32 only. `openvino` (optional: skipped with a message when not installed) converts the
exported SavedModel with `openvino.convert_model` and runs it on OpenVINO's CPU plugin in
float32 with the same thread count. Before a peer (or LiteRT mode) is timed on an input, its
labels must match TensorFlow `function` mode's on that input at >= 99.9 % of positions with
probabilities within 1e-3 (otherwise it stops: it would not be running the same model);
`agrees_with_tf` is that label agreement (for torch bfloat16 and litert_int8: their labels
against the float32 TensorFlow ones, reported, not enforced).
Peers need `pip install -r requirements-peers.txt`.

Dtypes: `float32`, and `bfloat16` = Keras `mixed_bfloat16` policy while the model is built and
timed (float32 variables, bfloat16 matmuls).

Each row times `repeats` calls after `warmup` untimed ones (tracing, compilation and the first
call's allocations happen there) and reports p50/p95 milliseconds per batch; throughput is from
the p50. The machine's matmul peak (`peak_gflops`) is measured in the same process, per dtype,
and `mfu` = achieved model FLOP/s / that peak (see `benchmark_models.flops_per_token`).

Memory: `rss_mb` is this process's resident set (`/proc/self/status` VmRSS) right after the row's
timed calls: the current model with the current mode's callable, plus TensorFlow's caches. Each
mode's callable is collected before the next is built, and each model is released
(`benchmark_models.release_memory`) before the next, so `rss_mb` does not carry earlier models.
`peak_rss_mb` is the process high-water mark so far (`getrusage` maxrss), which only grows, so it
says the most any row up to this one needed, not what this row needed on its own.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.util
import os
import sys
import tempfile
import warnings

import numpy as np

import xtremedistil_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from xtremedistil_tf import startup

if __name__ == "__main__":  # a command: TensorFlow's start-up lines stay out of its output
    startup.quiet_tensorflow(startup.verbosity_from_argv(sys.argv[1:]))

import tensorflow as tf

from xtremedistil_tf import (
    benchmark_models as bm,
    benchmark_modes as modes,
    benchmark_report,
    peers,
    speed,
)

INFERENCE_MODES = ("eager", "function", "xla", "saved_model")
LITERT_MODES = tuple(peers.LITERT_MODES)  # litert (float32), litert_int8 (dynamic-range int8)
TRAIN_OBJECTIVES = ("representations", "logits", "labels")
TRAIN_MODES = tuple(f"train_{o}" for o in TRAIN_OBJECTIVES)
MODES = INFERENCE_MODES + LITERT_MODES + TRAIN_MODES
DTYPES = ("float32", "bfloat16")
TRAIN_FLOPS_FACTOR = 3  # forward + backward ≈ 3 × forward

# Peers and the modules each needs (requirements-peers.txt installs them).
PEERS = {"torch": ("torch",), "onnxruntime": ("torch", "onnx", "onnxruntime"),
         "openvino": ("openvino",)}
OPTIONAL_PEERS = ("openvino",)  # skipped with a message when not installed
MIN_AGREEMENT = 0.999  # share of positions where a peer's label must equal TensorFlow's
PROBABILITY_ATOL = 1e-3  # largest allowed difference of a peer's probabilities

COLUMNS = (
    "model", "mode", "dtype", "batch_size", "seq_length", "params", "size_mb",
    "tokens_per_s", "sentences_per_s", "ms_per_batch_p50", "ms_per_batch_p95",
    "gflops_per_token", "achieved_gflops", "peak_gflops", "mfu", "speedup_vs_first_model",
    "agrees_with_tf", "rss_mb", "peak_rss_mb",
)


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """What to time. See the module docstring for the meaning of each mode and dtype."""

    output_dir: str
    models: tuple[str, ...] = ("mbert-base", "xtremedistil-l6-h256")
    batch_sizes: tuple[int, ...] = (32,)
    seq_lengths: tuple[int, ...] = (128,)
    modes: tuple[str, ...] = ("function",)
    dtypes: tuple[str, ...] = ("float32",)
    peers: tuple[str, ...] = ()
    repeats: int = 5
    warmup: int = 2
    peak_matmul_size: int = 2048
    peak_repeats: int = 10
    seed: int = 0

    def __post_init__(self):
        if not self.models:
            raise ValueError("--models is empty: name at least one preset or folder")
        for m in self.models:
            if m not in bm.PRESETS and not os.path.isdir(m):
                raise ValueError(f"--models: {m!r} is neither a preset ({', '.join(bm.PRESETS)}) "
                                 "nor a local Hugging Face folder")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"--modes {bad or 'empty'}: choose from {', '.join(MODES)}")
        bad = [d for d in self.dtypes if d not in DTYPES]
        if bad or not self.dtypes:
            raise ValueError(f"--dtypes {bad or 'empty'}: choose from {', '.join(DTYPES)}")
        bad = [p for p in self.peers if p not in PEERS]
        if bad:
            raise ValueError(f"--peers {bad}: choose from {', '.join(PEERS)}")
        for peer in self.peers:
            if peer not in OPTIONAL_PEERS and not all(_importable(m) for m in PEERS[peer]):
                raise ValueError(f"--peers {peer} needs 'pip install -r requirements-peers.txt'")
        if (self.peers or set(self.modes) & set(LITERT_MODES)) and "float32" not in self.dtypes:
            raise ValueError("--peers and --modes litert* need float32 in --dtypes: they are "
                             "checked against TensorFlow in float32")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError("--batch_sizes must be positive integers")
        if not self.seq_lengths or min(self.seq_lengths) < 1:
            raise ValueError("--seq_lengths must be positive integers")
        if self.repeats < 1 or self.warmup < 0:
            raise ValueError("--repeats must be >= 1 and --warmup >= 0")
        if self.peak_matmul_size < 1 or self.peak_repeats < 1:
            raise ValueError("--peak_matmul_size and --peak_repeats must be >= 1")


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# --------------------------------------------------------------------------- peers


def intra_op_threads() -> int:
    """Threads TensorFlow runs one op on: its setting, or every core this process may use."""
    return (tf.config.threading.get_intra_op_parallelism_threads()
            or len(os.sched_getaffinity(0)))


def agreement(reference: dict, candidate: dict) -> tuple[float, float]:
    """(share of positions with equal `label_ids`, largest |difference| of `probabilities`)."""
    labels = np.mean(np.asarray(reference["label_ids"]) == np.asarray(candidate["label_ids"]))
    probs = np.max(np.abs(np.asarray(reference["probabilities"], np.float32)
                          - np.asarray(candidate["probabilities"], np.float32)))
    return float(labels), float(probs)


def check_agreement(reference: dict, candidate: dict, what: str) -> float:
    """The label agreement of `candidate` with TensorFlow's `reference` outputs.

    Raises:
        RuntimeError: fewer than `MIN_AGREEMENT` of the labels agree, or a probability differs
            by more than `PROBABILITY_ATOL`: the peer does not compute the same model.
    """
    labels, probs = agreement(reference, candidate)
    if labels < MIN_AGREEMENT or probs > PROBABILITY_ATOL:
        raise RuntimeError(
            f"{what} disagrees with TensorFlow on the same input: labels equal at "
            f"{labels:.2%} of positions (needs {MIN_AGREEMENT:.1%}), probabilities differ by up "
            f"to {probs:.2g} (allowed {PROBABILITY_ATOL:g}); it is not running the same weights, "
            "so its timings would not be comparable")
    return labels


# --------------------------------------------------------------------------- the run


def run(config: BenchmarkConfig, log=print) -> list[dict]:
    """Times every model × dtype × mode (and peer) × batch × length; writes and returns the rows."""
    os.makedirs(config.output_dir, exist_ok=True)
    peaks = {}
    for dtype in config.dtypes:
        peaks[dtype] = bm.measure_peak_gflops(dtype, config.peak_matmul_size, config.peak_repeats)
        log(f"peak matmul {dtype} ({config.peak_matmul_size}^3): {peaks[dtype]:.1f} GFLOP/s")
    # The representations stage projects student hidden states to the teacher's (first model's).
    teacher_width = (bm.hidden_size(config.models[0])
                     if "train_representations" in config.modes else None)
    rng = np.random.default_rng(config.seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="benchmark-") as workdir:
        for i, name in enumerate(config.models):
            for dtype in config.dtypes:
                # A folder per model: the same model may be listed twice (its exports differ).
                rows += _time_model(config, name, dtype, peaks, teacher_width, rng,
                                    os.path.join(workdir, str(i)), log)
                bm.release_memory()
    first = {}
    for r in rows:
        key = (r["mode"], r["dtype"], r["batch_size"], r["seq_length"])
        first.setdefault(key, r["tokens_per_s"])
        r["speedup_vs_first_model"] = r["tokens_per_s"] / first[key]
    benchmark_report.write_outputs(config, rows, peaks, COLUMNS)
    return rows


def _time_model(config, name, dtype, peaks, teacher_width, rng, workdir, log) -> list[dict]:
    """One model's rows in one dtype: inference modes, peers (float32 pass), training modes.

    Every row of a batch × length gets the same token ids. Training comes last because its
    steps change the weights.
    """
    from xtremedistil_tf import models

    rows = []
    if dtype == "bfloat16":
        tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = bm.build_model(name, projection_dim=teacher_width)
        label = name if name in bm.PRESETS else os.path.basename(os.path.normpath(name))
        params = models.count_params(model)
        vocab = int(model.encoder.config.vocab_size)
        inputs = {}
        for batch in config.batch_sizes:
            for length in config.seq_lengths:
                ids = tf.constant(rng.integers(0, vocab, (batch, length)), tf.int32)
                inputs[batch, length] = (ids, tf.ones_like(ids))

        def timed(mode, row_dtype, fn, ids, mask, flops_factor=1, agrees=None, size_mb=None):
            batch, length = (int(n) for n in ids.shape)
            times = speed.time_calls(fn, ids, mask, config.repeats, config.warmup)
            gflops = flops_factor * bm.model_flops_per_token(model, length) / 1e9
            peak = peaks.get(row_dtype, peaks["float32"] if "float32" in peaks else 0.0)
            row = {"model": label, "mode": mode, "dtype": row_dtype, "batch_size": batch,
                   "seq_length": length, "params": params,
                   # float32 variables (also under bf16), or the size of the file run
                   "size_mb": params * 4 / 1e6 if size_mb is None else size_mb,
                   **bm.summarise_times(times, batch, length),
                   "gflops_per_token": gflops, "peak_gflops": peak,
                   "agrees_with_tf": agrees}
            row["achieved_gflops"] = row["tokens_per_s"] * gflops
            row["mfu"] = bm.mfu(row["tokens_per_s"], gflops, peak)
            row["rss_mb"], row["peak_rss_mb"] = bm.rss_mb()
            log(f"{label:24s} {mode:21s} {row_dtype:8s} {batch:3d}x{length:<4d} "
                f"{row['tokens_per_s']:9.0f} tok/s  p50 {row['ms_per_batch_p50']:8.1f} ms"
                f"  p95 {row['ms_per_batch_p95']:8.1f} ms  MFU {row['mfu']:.1%}"
                + (f"  agrees {agrees:.2%}" if agrees is not None else ""))
            return row

        # Each mode's callable (a traced function, a loaded SavedModel, a training step with
        # its optimizer's slots) is dropped and collected before the next mode is built.
        for mode in (m for m in config.modes if m in INFERENCE_MODES):
            fn = modes.make_callable(model, mode, os.path.join(workdir, dtype))
            for ids, mask in inputs.values():
                rows.append(timed(mode, dtype, fn, ids, mask))
            del fn
            gc.collect()
        lite = [m for m in config.modes if m in LITERT_MODES]
        if (config.peers or lite) and dtype == "float32":
            rows += _time_peers(config, model, label, inputs, timed, workdir, log)
            gc.collect()
        elif lite:
            log(f"{label}: no {dtype} {','.join(lite)} rows (LiteRT converts float32 models)")
        for mode in (m for m in config.modes if m in TRAIN_MODES):
            objective = mode.removeprefix("train_")
            step = modes.make_train_step(model, objective,
                                   steps=(config.warmup + config.repeats) * len(inputs))
            for (batch, length), (ids, mask) in inputs.items():
                targets = modes.random_targets(objective, rng, batch, length, model.num_labels,
                                         teacher_width or model.hidden_size)
                rows.append(timed(mode, dtype, modes.train_callable(step, targets), ids, mask,
                                  flops_factor=TRAIN_FLOPS_FACTOR))
            del step, targets
            gc.collect()
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    return rows


def _time_peers(config, model, label, inputs, timed, workdir, log) -> list[dict]:
    """The peers' and LiteRT modes' rows of one float32 model; each is checked against
    TensorFlow `function` mode on an input before it is timed on it (int8 and bf16 rows:
    agreement reported, not enforced)."""
    reference = tf.function(modes.forward_fn(model), autograph=False)
    threads = intra_op_threads()
    runs = []  # (mode, row dtype, fn, int64 inputs?, size in MB)
    for mode in (m for m in config.modes if m in LITERT_MODES):
        quantize = peers.LITERT_MODES[mode]
        fn, size = peers.litert_callable(model, quantize, os.path.join(workdir, "litert"),
                                         modes.NoTokenizer(), threads)
        runs.append((mode, "int8" if quantize == "dynamic_int8" else "float32", fn, False, size))
    if "torch" in config.peers or "onnxruntime" in config.peers:
        tagger = peers.torch_tagger(model)
    if "torch" in config.peers:
        runs += [("torch", d, peers.torch_callable(tagger, d, threads), True, None)
                 for d in config.dtypes]
    if "onnxruntime" in config.peers:
        path = os.path.join(workdir, "onnx", f"{model.name}.onnx")
        runs.append(("onnxruntime", "float32", peers.onnxruntime_callable(tagger, path, threads),
                     True, None))
        if "bfloat16" in config.dtypes:
            log(f"{label}: no onnxruntime bfloat16 row (the peer runs float32 only)")
    if "openvino" in config.peers:
        if peers.openvino_available():
            from xtremedistil_tf import savedmodel

            saved = savedmodel.export(model, [f"L{i}" for i in range(model.num_labels)],
                                      modes.NoTokenizer(), os.path.join(workdir, "openvino"),
                                      model.name, version=1)
            runs.append(("openvino", "float32", peers.openvino_callable(saved, threads)[0],
                         False, None))
        else:
            log(f"{label}: openvino not installed, skipped (pip install -r "
                "requirements-peers.txt)")
    expected = {shape: {k: v.numpy() for k, v in reference(ids, mask).items()}
                for shape, (ids, mask) in inputs.items()}
    rows = []
    for peer, dtype, fn, int64, size in runs:
        for (batch, length), (ids, mask) in inputs.items():
            cast = np.int64 if int64 else np.int32
            ids_np, mask_np = ids.numpy().astype(cast), mask.numpy().astype(cast)
            out = fn(ids_np, mask_np)
            if dtype == "float32":
                agrees = check_agreement(expected[batch, length], out,
                                         f"{peer} on {label} ({batch}x{length})")
            else:  # bf16 / int8 rounding against the float32 reference: reported, not enforced
                agrees = agreement(expected[batch, length], out)[0]
            rows.append(timed(peer, dtype, fn, ids_np, mask_np, agrees=agrees, size_mb=size))
    return rows


# --------------------------------------------------------------------------- entry point


def define_flags(fv) -> None:
    """The command's flags (absl, like run_distil.py; see `cli`), defined into `fv`."""
    from absl import flags

    d = BenchmarkConfig
    flags.DEFINE_string("output_dir", None, "Where the CSV, markdown, plot and log go.",
                        flag_values=fv)
    flags.DEFINE_list("models", list(d.models), f"Presets ({', '.join(bm.PRESETS)}) or local HF "
                      "folders; the first is the teacher that speed-ups are relative to.",
                      flag_values=fv)
    flags.DEFINE_list("batch_sizes", [str(x) for x in d.batch_sizes], "Batch sizes.",
                      flag_values=fv)
    flags.DEFINE_list("seq_lengths", [str(x) for x in d.seq_lengths], "Sequence lengths.",
                      flag_values=fv)
    flags.DEFINE_list("modes", list(d.modes), ", ".join(MODES), flag_values=fv)
    flags.DEFINE_list("dtypes", list(d.dtypes), ", ".join(DTYPES), flag_values=fv)
    flags.DEFINE_list("peers", list(d.peers), f"{', '.join(PEERS)} (needs 'pip install -r "
                      "requirements-peers.txt').", flag_values=fv)
    flags.DEFINE_integer("repeats", d.repeats, "Timed calls (median).", flag_values=fv)
    flags.DEFINE_integer("warmup", d.warmup, "Untimed calls first.", flag_values=fv)
    flags.DEFINE_integer("peak_matmul_size", d.peak_matmul_size, "Matmul size of the peak "
                         "measurement.", flag_values=fv)
    flags.DEFINE_integer("peak_repeats", d.peak_repeats, "Calls of the peak measurement.",
                         flag_values=fv)
    flags.DEFINE_integer("seed", d.seed, "Random seed of the weights and inputs.",
                         flag_values=fv)


def config_from_flags(fv) -> BenchmarkConfig:
    """The `BenchmarkConfig` of parsed flags (ValueError, naming the flag, when invalid)."""
    if not fv.output_dir:
        raise ValueError("--output_dir is required")

    def ints(name):
        try:
            return tuple(int(x) for x in getattr(fv, name))
        except ValueError:
            raise ValueError(f"--{name} takes comma-separated integers") from None

    return BenchmarkConfig(
        output_dir=fv.output_dir, models=tuple(fv.models), batch_sizes=ints("batch_sizes"),
        seq_lengths=ints("seq_lengths"), modes=tuple(fv.modes), dtypes=tuple(fv.dtypes),
        peers=tuple(fv.peers), repeats=fv.repeats, warmup=fv.warmup,
        peak_matmul_size=fv.peak_matmul_size, peak_repeats=fv.peak_repeats, seed=fv.seed)


def run_from_flags(fv) -> int:
    """Runs the benchmark the parsed flags describe; returns the exit status."""
    try:
        config = config_from_flags(fv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import transformers

    transformers.logging.set_verbosity_error()
    # transformers 4.54's BERT passes its own deprecated argument on every PyTorch call.
    warnings.filterwarnings("ignore", message=".*encoder_attention_mask.*is deprecated")
    tf.random.set_seed(config.seed)
    print(startup.cpu_line())
    run(config)
    print(os.path.join(config.output_dir, "benchmark.md"))
    return 0


def main(argv=None) -> int:
    """In-process entry (tests, notebooks): `argv` are the flags (see `cli`)."""
    from xtremedistil_tf import cli

    return cli.main(define_flags, run_from_flags, "benchmark", argv)


if __name__ == "__main__":
    from xtremedistil_tf import cli

    cli.run_app(define_flags, run_from_flags)
