"""Inference benchmark: teacher vs students, per execution mode and dtype, as a fraction of peak.

    python -m xtremedistil_tf.benchmark --output_dir results/benchmark \
        [--models mbert-base,xtremedistil-l6-h256,...] [--batch_sizes 32] [--seq_lengths 128] \
        [--modes eager,function,xla,saved_model] [--dtypes float32,bfloat16] \
        [--repeats 5] [--warmup 2] [--peak_matmul_size 2048]

Every model is a `models.TokenClassifier` with a 9-label softmax head, and every mode times the
same computation the exported `serving_default` runs: encoder, head, `probabilities` and
`decode` (argmax), outputs copied to host. Models are named presets (random weights built from
configs, offline: `PRESETS`) or local Hugging Face folders (`models.load_encoder`).

Modes: `eager` (Keras call), `function` (`tf.function`), `xla` (`tf.function(jit_compile=True)`),
`saved_model` (`export.export` to a temporary folder, `tf.saved_model.load`, `serving_default`).
Dtypes: `float32`, and `bfloat16` = Keras `mixed_bfloat16` policy while the model is built and
timed (float32 variables, bfloat16 matmuls).

Each row times `repeats` calls after `warmup` untimed ones (tracing, compilation and the first
call's allocations happen there) and reports p50/p95 milliseconds per batch; throughput is from
the p50. The machine's matmul peak (`peak_gflops`) is measured in the same process, per dtype,
and `mfu` = achieved model FLOP/s / that peak (see `flops_per_token` for the model FLOPs).

Memory: `rss_mb` is this process's resident set (`/proc/self/status` VmRSS) right after the row's
timed calls, so it includes every model still alive and TensorFlow's caches; `peak_rss_mb` is the
process high-water mark so far (`getrusage` maxrss), which only grows, so it says the most any
row up to this one needed, not what this row needed on its own.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import resource
import sys
import tempfile
import time

import numpy as np

import xtremedistil_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf

MODES = ("eager", "function", "xla", "saved_model")
DTYPES = ("float32", "bfloat16")
NUM_LABELS = 9  # CoNLL/WikiANN-style IOB2 tag set: O + B/I of PER, ORG, LOC, MISC

# Architecture-shaped presets (random weights). Sizes follow the hub configs:
# bert-base-multilingual-cased, xlm-roberta-base, microsoft/xtremedistil-l*-h*-uncased.
PRESETS = {
    "mbert-base": ("bert", dict(vocab_size=119547, hidden_size=768, num_hidden_layers=12,
                                num_attention_heads=12, intermediate_size=3072)),
    "xlmr-base": ("xlm-roberta", dict(vocab_size=250002, hidden_size=768, num_hidden_layers=12,
                                      num_attention_heads=12, intermediate_size=3072,
                                      max_position_embeddings=514, type_vocab_size=1,
                                      pad_token_id=1, bos_token_id=0, eos_token_id=2)),
    "xtremedistil-l6-h256": ("bert", dict(vocab_size=30522, hidden_size=256, num_hidden_layers=6,
                                          num_attention_heads=8, intermediate_size=1024)),
    "xtremedistil-l6-h384": ("bert", dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                                          num_attention_heads=12, intermediate_size=1536)),
    "xtremedistil-l12-h384": ("bert", dict(vocab_size=30522, hidden_size=384,
                                           num_hidden_layers=12, num_attention_heads=12,
                                           intermediate_size=1536)),
}

COLUMNS = (
    "model", "mode", "dtype", "batch_size", "seq_length", "params", "size_mb",
    "tokens_per_s", "sentences_per_s", "ms_per_batch_p50", "ms_per_batch_p95",
    "gflops_per_token", "achieved_gflops", "peak_gflops", "mfu", "speedup_vs_first_model",
    "rss_mb", "peak_rss_mb",
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
    repeats: int = 5
    warmup: int = 2
    peak_matmul_size: int = 2048
    peak_repeats: int = 10
    seed: int = 0

    def __post_init__(self):
        if not self.models:
            raise ValueError("--models is empty: name at least one preset or folder")
        for m in self.models:
            if m not in PRESETS and not os.path.isdir(m):
                raise ValueError(f"--models: {m!r} is neither a preset ({', '.join(PRESETS)}) "
                                 "nor a local Hugging Face folder")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"--modes {bad or 'empty'}: choose from {', '.join(MODES)}")
        bad = [d for d in self.dtypes if d not in DTYPES]
        if bad or not self.dtypes:
            raise ValueError(f"--dtypes {bad or 'empty'}: choose from {', '.join(DTYPES)}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError("--batch_sizes must be positive integers")
        if not self.seq_lengths or min(self.seq_lengths) < 1:
            raise ValueError("--seq_lengths must be positive integers")
        if self.repeats < 1 or self.warmup < 0:
            raise ValueError("--repeats must be >= 1 and --warmup >= 0")
        if self.peak_matmul_size < 1 or self.peak_repeats < 1:
            raise ValueError("--peak_matmul_size and --peak_repeats must be >= 1")


# --------------------------------------------------------------------------- arithmetic


def flops_per_token(num_layers: int, hidden: int, intermediate: int, seq_length: int,
                    num_labels: int = NUM_LABELS) -> float:
    """Analytic forward FLOPs per token of a BERT-style tagger (1 multiply-add = 2 FLOPs).

    Per layer: the Q, K, V and output projections (4·H² multiply-adds), the feed-forward
    (2·H·I), and attention scores QKᵀ plus the weighted sum over values (2·T·H), so
    `L · (2·(4·H² + 2·H·I) + 2·2·T·H)`, plus the classifier `2·H·K`. Embedding lookups,
    layer norms, softmax, GELU and biases are excluded (lower-order terms).
    """
    per_layer = 2 * (4 * hidden**2 + 2 * hidden * intermediate) + 2 * 2 * seq_length * hidden
    return float(num_layers * per_layer + 2 * hidden * num_labels)


def mfu(tokens_per_s: float, gflops_per_token: float, peak_gflops: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s (tokens/s × FLOPs/token) over the peak."""
    return tokens_per_s * gflops_per_token / peak_gflops if peak_gflops > 0 else float("nan")


def summarise_times(times_ms: list[float], batch_size: int, seq_length: int) -> dict:
    """p50/p95 ms per batch and the throughput implied by the p50."""
    p50, p95 = (float(v) for v in np.percentile(times_ms, [50, 95]))
    return {
        "ms_per_batch_p50": p50,
        "ms_per_batch_p95": p95,
        "sentences_per_s": batch_size / (p50 / 1000),
        "tokens_per_s": batch_size * seq_length / (p50 / 1000),
    }


def measure_peak_gflops(dtype: str, n: int = 2048, repeats: int = 10) -> float:
    """Best n×n×n matmul rate of this machine in GFLOP/s (2·n³ FLOPs per call), `tf.function`."""
    tf_dtype = tf.bfloat16 if dtype == "bfloat16" else tf.float32
    rng = np.random.default_rng(0)
    a = tf.cast(rng.standard_normal((n, n), dtype=np.float32), tf_dtype)
    b = tf.cast(rng.standard_normal((n, n), dtype=np.float32), tf_dtype)
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.matmul(x, y)[:1, :1], tf.float32)))
    matmul(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _rss_mb() -> tuple[float, float]:
    """(current VmRSS, process high-water mark) in MB (10^6 bytes)."""
    current = float("nan")
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    current = int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # KiB on Linux
    return current, peak


# --------------------------------------------------------------------------- models


def build_model(name: str):
    """A `TokenClassifier` (9-label softmax head, no dropout) for a preset or a local folder.

    Built under whatever Keras dtype policy is active, so set `mixed_bfloat16` first for bf16.
    """
    import transformers

    from xtremedistil_tf import models

    if name in PRESETS:
        kind, kwargs = PRESETS[name]
        cfg = transformers.AutoConfig.for_model(kind, **kwargs)
        hf = transformers.TFAutoModel.from_config(cfg, add_pooling_layer=False)
        encoder = models._main_layer(hf)
    else:
        encoder = models.load_encoder(name)
    label = os.path.basename(os.path.normpath(name)) if name not in PRESETS else name
    return models.TokenClassifier(encoder, NUM_LABELS, dropout=0.0, head="softmax",
                                  name=label.replace("-", "_")).build_with_dummy()


def model_flops_per_token(model, seq_length: int) -> float:
    cfg = model.encoder.config
    return flops_per_token(cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size,
                           seq_length, model.num_labels)


class _NoTokenizer:
    """Stands in for a tokenizer in `export.export`: random presets have none to save."""

    def save_pretrained(self, folder):
        with open(os.path.join(folder, "NO_TOKENIZER"), "w") as f:
            f.write("benchmark export of a random-weight preset; no tokenizer\n")


def _forward_fn(model):
    """The serving computation (see `export._Tagger._forward`) without the input checks."""

    def forward(input_ids, attention_mask):
        logits = model({"input_ids": input_ids, "attention_mask": attention_mask},
                       training=False)["logits"]
        return {"label_ids": model.decode(logits, input_ids, attention_mask),
                "probabilities": model.probabilities(logits, input_ids, attention_mask)}

    return forward


def make_callable(model, mode: str, workdir: str):
    """`fn(input_ids, attention_mask) -> dict of tensors` for a mode (SavedModel: exported here)."""
    forward = _forward_fn(model)
    if mode == "eager":
        return forward
    if mode == "function":
        return tf.function(forward)
    if mode == "xla":
        return tf.function(forward, jit_compile=True)
    from xtremedistil_tf import export

    labels = ["O"] + [f"{p}-{t}" for t in ("PER", "ORG", "LOC", "MISC") for p in "BI"]
    path = export.export(model, labels[:NUM_LABELS], _NoTokenizer(), workdir, model.name,
                         version=1, max_seq_length=max(8, export.max_positions(model)))
    serving = tf.saved_model.load(path).signatures["serving_default"]
    return lambda input_ids, attention_mask: serving(input_ids=input_ids,
                                                     attention_mask=attention_mask)


def time_calls(fn, input_ids, attention_mask, repeats: int, warmup: int) -> list[float]:
    """Milliseconds of each of `repeats` calls (outputs copied to host) after `warmup` calls."""
    for _ in range(warmup):
        [t.numpy() for t in fn(input_ids, attention_mask).values()]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        [t.numpy() for t in fn(input_ids, attention_mask).values()]
        times.append((time.perf_counter() - t0) * 1000)
    return times


# --------------------------------------------------------------------------- the run


def run(config: BenchmarkConfig, log=print) -> list[dict]:
    """Times every model × dtype × mode × batch × length; writes and returns the rows."""
    os.makedirs(config.output_dir, exist_ok=True)
    peaks = {}
    for dtype in config.dtypes:
        peaks[dtype] = measure_peak_gflops(dtype, config.peak_matmul_size, config.peak_repeats)
        log(f"peak matmul {dtype} ({config.peak_matmul_size}^3): {peaks[dtype]:.1f} GFLOP/s")
    rng = np.random.default_rng(config.seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="benchmark-") as workdir:
        for name in config.models:
            for dtype in config.dtypes:
                rows += _time_model(config, name, dtype, peaks[dtype], rng, workdir, log)
                tf.keras.backend.clear_session()
    first = {}
    for r in rows:
        key = (r["mode"], r["dtype"], r["batch_size"], r["seq_length"])
        first.setdefault(key, r["tokens_per_s"])
        r["speedup_vs_first_model"] = r["tokens_per_s"] / first[key]
    write_outputs(config, rows, peaks)
    return rows


def _time_model(config, name, dtype, peak, rng, workdir, log) -> list[dict]:
    from xtremedistil_tf import models

    rows = []
    if dtype == "bfloat16":
        tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model(name)
        label = name if name in PRESETS else os.path.basename(os.path.normpath(name))
        params = models.count_params(model)
        vocab = int(model.encoder.config.vocab_size)
        for mode in config.modes:
            fn = make_callable(model, mode, os.path.join(workdir, dtype))
            for batch in config.batch_sizes:
                for length in config.seq_lengths:
                    ids = tf.constant(rng.integers(0, vocab, (batch, length)), tf.int32)
                    mask = tf.ones_like(ids)
                    times = time_calls(fn, ids, mask, config.repeats, config.warmup)
                    gflops = model_flops_per_token(model, length) / 1e9
                    row = {"model": label, "mode": mode, "dtype": dtype, "batch_size": batch,
                           "seq_length": length, "params": params,
                           "size_mb": params * 4 / 1e6,  # float32 variables, also under bf16
                           **summarise_times(times, batch, length),
                           "gflops_per_token": gflops, "peak_gflops": peak}
                    row["achieved_gflops"] = row["tokens_per_s"] * gflops
                    row["mfu"] = mfu(row["tokens_per_s"], gflops, peak)
                    row["rss_mb"], row["peak_rss_mb"] = _rss_mb()
                    rows.append(row)
                    log(f"{label:24s} {mode:11s} {dtype:8s} {batch:3d}x{length:<4d} "
                        f"{row['tokens_per_s']:9.0f} tok/s  p50 {row['ms_per_batch_p50']:8.1f} ms"
                        f"  p95 {row['ms_per_batch_p95']:8.1f} ms  MFU {row['mfu']:.1%}")
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    return rows


# --------------------------------------------------------------------------- outputs


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown(rows: list[dict], peaks: dict) -> str:
    """The full table, then teacher (first model) vs the others per mode, dtype and shape."""
    cols = ("model", "mode", "dtype", "batch_size", "seq_length", "params", "size_mb",
            "tokens_per_s", "sentences_per_s", "ms_per_batch_p50", "ms_per_batch_p95",
            "gflops_per_token", "mfu", "speedup_vs_first_model", "rss_mb", "peak_rss_mb")
    lines = ["# Inference benchmark", "",
             "Matmul peak measured in the same run: "
             + ", ".join(f"{d} {g:.1f} GFLOP/s" for d, g in peaks.items()), "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in rows]
    if rows:
        teacher = rows[0]["model"]
        lines += ["", f"## Teacher ({teacher}) vs students", "",
                  "| mode | dtype | batch × len | model | params | MB | tokens/s | speed-up | "
                  "% of peak |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(
                f"| {r['mode']} | {r['dtype']} | {r['batch_size']} × {r['seq_length']} | "
                f"{r['model']} | {r['params'] / 1e6:.1f}M | {r['size_mb']:.0f} | "
                f"{r['tokens_per_s']:.0f} | {r['speedup_vs_first_model']:.1f}× | "
                f"{100 * r['mfu']:.0f} % |")
    lines += ["", "`rss_mb`: resident set right after the row (all live models); `peak_rss_mb`: "
              "process high-water mark so far (monotonic). MB = 10^6 bytes; size_mb = float32 "
              "parameters × 4 bytes.", ""]
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    """Tokens/s per model, one bar per mode × dtype, one panel per batch × length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = sorted({(r["batch_size"], r["seq_length"]) for r in rows})
    names = list(dict.fromkeys(r["model"] for r in rows))
    series = list(dict.fromkeys((r["mode"], r["dtype"]) for r in rows))
    fig, axes = plt.subplots(len(shapes), 1, figsize=(max(6, 1.6 * len(names) * 1.5),
                                                       3.5 * len(shapes)), squeeze=False)
    width = 0.8 / max(1, len(series))
    for ax, (batch, length) in zip(axes[:, 0], shapes):
        for j, (mode, dtype) in enumerate(series):
            values = [next((r["tokens_per_s"] for r in rows if r["model"] == n
                            and r["mode"] == mode and r["dtype"] == dtype
                            and r["batch_size"] == batch and r["seq_length"] == length), 0.0)
                      for n in names]
            ax.bar(np.arange(len(names)) + j * width, values, width, label=f"{mode} {dtype}")
        ax.set_xticks(np.arange(len(names)) + width * (len(series) - 1) / 2)
        ax.set_xticklabels(names, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("tokens/s (log)")
        ax.set_title(f"batch {batch} × {length} tokens")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(config: BenchmarkConfig, rows: list[dict], peaks: dict) -> None:
    d = config.output_dir
    with open(os.path.join(d, "benchmark.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({c: r.get(c) for c in COLUMNS} for r in rows)
    with open(os.path.join(d, "benchmark.md"), "w", encoding="utf-8") as f:
        f.write(markdown(rows, peaks))
    with open(os.path.join(d, "flags.txt"), "w", encoding="utf-8") as f:
        for k, v in dataclasses.asdict(config).items():
            v = ",".join(map(str, v)) if isinstance(v, tuple) else v
            f.write(f"--{k}={v}\n")
    if rows:
        plot(rows, os.path.join(d, "benchmark.png"))


# --------------------------------------------------------------------------- entry point


def _csv(cast=str):
    return lambda s: tuple(cast(x.strip()) for x in s.split(",") if x.strip())


def parse_args(argv=None) -> BenchmarkConfig:
    p = argparse.ArgumentParser(prog="python -m xtremedistil_tf.benchmark",
                                description=__doc__.split("\n")[0])
    p.add_argument("--output_dir", required=True)
    p.add_argument("--models", type=_csv(), default=BenchmarkConfig.models,
                   help=f"presets ({', '.join(PRESETS)}) or local HF folders; the first is the "
                        "teacher that speed-ups are relative to")
    p.add_argument("--batch_sizes", type=_csv(int), default=BenchmarkConfig.batch_sizes)
    p.add_argument("--seq_lengths", type=_csv(int), default=BenchmarkConfig.seq_lengths)
    p.add_argument("--modes", type=_csv(), default=BenchmarkConfig.modes,
                   help=", ".join(MODES))
    p.add_argument("--dtypes", type=_csv(), default=BenchmarkConfig.dtypes,
                   help=", ".join(DTYPES))
    p.add_argument("--repeats", type=int, default=BenchmarkConfig.repeats)
    p.add_argument("--warmup", type=int, default=BenchmarkConfig.warmup)
    p.add_argument("--peak_matmul_size", type=int, default=BenchmarkConfig.peak_matmul_size)
    p.add_argument("--peak_repeats", type=int, default=BenchmarkConfig.peak_repeats)
    p.add_argument("--seed", type=int, default=BenchmarkConfig.seed)
    return BenchmarkConfig(**vars(p.parse_args(argv)))


def main(argv=None) -> int:
    try:
        config = parse_args(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import transformers

    transformers.logging.set_verbosity_error()
    tf.random.set_seed(config.seed)
    run(config)
    print(os.path.join(config.output_dir, "benchmark.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
