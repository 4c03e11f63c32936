"""The benchmark's outputs: benchmark.csv, benchmark.md (the full table, then the teacher
against each student) and benchmark.png (tokens/s per model, mode and dtype)."""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown(rows: list[dict], peaks: dict) -> str:
    """The full table, then teacher (first model) vs the others per mode, dtype and shape."""
    cols = ("model", "mode", "dtype", "batch_size", "seq_length", "params", "size_mb",
            "tokens_per_s", "sentences_per_s", "ms_per_batch_p50", "ms_per_batch_p95",
            "gflops_per_token", "mfu", "speedup_vs_first_model", "agrees_with_tf", "rss_mb",
            "peak_rss_mb")
    lines = ["# Benchmark", "",
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
    lines += ["", "`train_*` rows: one optimizer step per batch; their FLOPs are 3 × forward. "
              "`agrees_with_tf`: share of a peer's labels equal to TensorFlow `function` mode's "
              "on the same input. `rss_mb`: resident set right after the row (all live models); "
              "`peak_rss_mb`: process high-water mark so far (monotonic). MB = 10^6 bytes; "
              "size_mb = float32 parameters × 4 bytes.", ""]
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


def write_outputs(config, rows: list[dict], peaks: dict, columns: tuple) -> None:
    """Writes the outputs of `config` (a `benchmark.BenchmarkConfig`) to its output_dir."""
    d = config.output_dir
    with open(os.path.join(d, "benchmark.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({c: r.get(c) for c in columns} for r in rows)
    with open(os.path.join(d, "benchmark.md"), "w", encoding="utf-8") as f:
        f.write(markdown(rows, peaks))
    with open(os.path.join(d, "flags.txt"), "w", encoding="utf-8") as f:
        for k, v in dataclasses.asdict(config).items():
            v = ",".join(map(str, v)) if isinstance(v, tuple) else v
            f.write(f"--{k}={v}\n")
    if rows:
        plot(rows, os.path.join(d, "benchmark.png"))
