"""Run outputs: metrics.json (the DESIGN contract), the comparison table, curves as PNG."""

from __future__ import annotations

import json
import os
import sys

from xtremedistil_tf import evaluate

MODEL_KEYS = ("f1", "precision", "recall", "accuracy", "accuracy_non_o", "per_type",
              "per_language", "params", "size_mb", "ms_per_batch")


def log(message: str) -> None:
    """A run's progress line, on stderr (stdout carries the comparison table)."""
    print(message, file=sys.stderr, flush=True)


def write_json(path: str, obj) -> None:
    """Writes JSON atomically (temporary file, then rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def model_entry(scores: dict, params: int, size_mb: float, ms_per_batch: float) -> dict:
    """One model's block of metrics.json: the contract keys first, then the extra scores."""
    entry = {k: scores.get(k, {} if k.startswith("per_") else 0.0) for k in MODEL_KEYS[:7]}
    entry.update(params=int(params), size_mb=float(size_mb), ms_per_batch=float(ms_per_batch))
    for k, v in scores.items():
        entry.setdefault(k, v)
    return entry


def metrics_document(teacher: dict, student: dict, extra: dict | None = None) -> dict:
    """The metrics.json document: split, teacher, student, speedup (+ `extra` keys)."""
    doc = {
        "split": "test",
        "teacher": teacher,
        "student": student,
        "speedup": teacher["ms_per_batch"] / student["ms_per_batch"],
    }
    doc.update(extra or {})
    return doc


def comparison_table(doc: dict) -> str:
    """The teacher-vs-student markdown table of a metrics document."""
    return evaluate.format_comparison({"teacher": doc["teacher"], "student": doc["student"]})


def language_table(doc: dict) -> str:
    """Per-language test F1 of teacher and student (and the target average under the zero-shot
    protocol) as markdown; empty when the test data has fewer than two languages."""
    langs = sorted(set(doc["teacher"].get("per_language", {}))
                   | set(doc["student"].get("per_language", {})))
    if len(langs) < 2:
        return ""
    protocol = doc.get("protocol")
    head = ["model", *langs] + (["target avg"] if protocol else [])
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for name in ("teacher", "student"):
        entry = doc[name]
        cells = [name] + [f"{entry['per_language'][lang]['f1']:.3f}"
                          if lang in entry["per_language"] else "-" for lang in langs]
        if protocol:
            cells.append(f"{entry['target_avg_f1']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if protocol:
        text += (f"\nzero-shot {protocol['source_lang']} -> {','.join(protocol['target_langs'])}"
                 f" ({protocol['strategy']}); model choice: {protocol['model_choice']}\n")
    return text


def plot_history(history: list[dict], path: str) -> None:
    """Training loss and dev metric per epoch, one line per stage, as a PNG.

    A stage whose loss has several named terms (`train_terms`: MSD, MTMT, per-layer
    classifiers) also gets a dashed line per non-zero term.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(11, 4))
    step = 0
    for stage in dict.fromkeys(row["stage"] for row in history):
        rows = [r for r in history if r["stage"] == stage]
        x = list(range(step + 1, step + len(rows) + 1))
        step += len(rows)
        ax_loss.plot(x, [r["train_loss"] for r in rows], marker="o", label=stage)
        terms = rows[0].get("train_terms", {})
        for term in terms if len(terms) > 1 else ():
            values = [r["train_terms"][term] for r in rows]
            if any(v > 0 for v in values):
                ax_loss.plot(x, values, linestyle="--", linewidth=1, label=f"{stage}: {term}")
        key = "dev_f1" if "dev_f1" in rows[0] else "dev_loss"
        ax_dev.plot(x, [r[key] for r in rows], marker="o", label=f"{stage} ({key})")
    ax_loss.set(title="training loss", xlabel="epoch (all stages)", yscale="log")
    ax_dev.set(title="dev metric", xlabel="epoch (all stages)")
    ax_dev.legend(fontsize=6)
    if any(len(r.get("train_terms", {})) > 1 for r in history):
        ax_loss.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
