"""Mixed-precision training against float32 on one WikiANN recipe: F1 and time per epoch.

    python scripts/compare_mixed_precision.py --data ../shared/data/wikiann \
        --teacher ../models/multilingual-e5-small --output_dir runs/mixed_precision \
        --results results/mixed_precision [--mixed bfloat16] [--seeds 1,2]

For every seed, two run_distil.py runs with flags/wikiann.cfg on the same seeded samples
(--train_per_lang / --dev_per_lang / --test_per_lang of --langs): float32, then
`--mixed_precision=MIXED`. Each fine-tunes its own teacher (--teacher_epochs) and distils the
l4-h256 student cut from it by weight selection on the training text (stages representations,
logits, labels; --epochs each). RESULTS/summary.csv and summary.md give per run the teacher's
and student's dev F1 (what model choice sees) and test F1 (both scored in float32), and each
stage's fastest epoch in seconds (training and its dev evaluation, from history.json; the first
epoch also traces the step), with the ratio float32 / mixed per seed. The runs take turns on one machine: run it on an otherwise idle CPU.
Resumable: rerun the same command; finished runs are skipped.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))

import reproduce_wikiann as rw  # noqa: E402

RECIPE = ["--student=l4-h256", "--student_init=select", "--nogradual_unfreezing",
          "--patience=1", "--learning_rate=2e-4"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder with <lang>/{train,dev,test}.conll")
    p.add_argument("--teacher", required=True, help="hub id or folder of the teacher")
    p.add_argument("--output_dir", default="runs/mixed_precision")
    p.add_argument("--results", default="results/mixed_precision")
    p.add_argument("--mixed", default="bfloat16", choices=["bfloat16", "float16"])
    p.add_argument("--seeds", default="1,2")
    p.add_argument("--langs", default="en,de,es")
    p.add_argument("--train_per_lang", type=int, default=2000)
    p.add_argument("--dev_per_lang", type=int, default=500)
    p.add_argument("--test_per_lang", type=int, default=1000)
    p.add_argument("--teacher_epochs", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--summary_only", action="store_true", help="only rebuild the tables")
    p.add_argument("extra", nargs="*", help="more run_distil.py flags for every run (after --)")
    args = p.parse_args(argv)
    langs = [x for x in args.langs.split(",") if x]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    rows = [(seed, precision) for seed in seeds for precision in ("float32", args.mixed)]
    if not args.summary_only:
        args.seed = seeds[0]  # one data sample for every run; seeds vary the training
        files = rw.sample_data(args.data, os.path.join(args.output_dir, "data"), langs, args)
        for seed, precision in rows:
            flags = [*RECIPE, f"--teacher_epochs={args.teacher_epochs}",
                     f"--epochs={args.epochs}", f"--mixed_precision={_flag(precision)}",
                     "--export_formats=none"]
            args.seed = seed
            name = _name(seed, precision)
            if not rw.run_row(name, flags, files, args, first=name):  # own teacher each
                return 1
    table = summarise(args, rows)
    if not table:
        print("no finished runs yet", file=sys.stderr)
        return 1
    print(table)
    return 0


def _flag(precision: str) -> str:
    return "none" if precision == "float32" else precision


def _name(seed: int, precision: str) -> str:
    return f"{precision} seed{seed}"


def summarise(args, rows) -> str:
    """Writes RESULTS/summary.csv and summary.md from the finished runs; returns the markdown."""
    found = []
    for seed, precision in rows:
        folder = rw.run_dir(args, _name(seed, precision))
        if not os.path.exists(os.path.join(folder, "metrics.json")):
            continue
        with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as f:
            doc = json.load(f)
        with open(os.path.join(folder, "history.json"), encoding="utf-8") as f:
            history = json.load(f)
        seconds = {}
        for row in history:
            seconds.setdefault(row["stage"], []).append(row["seconds"])
        found.append({
            "seed": seed, "precision": precision,
            "teacher_dev_f1": doc["teacher"]["dev_f1"], "teacher_f1": doc["teacher"]["f1"],
            "student_dev_f1": doc["student"]["dev_f1"], "student_f1": doc["student"]["f1"],
            **{f"s_per_epoch_{k}": min(v) for k, v in seconds.items()},
            "wall_s": doc["wall_seconds"]})
    if not found:
        return ""
    os.makedirs(args.results, exist_ok=True)
    keys = list(dict.fromkeys(k for r in found for k in r))
    with open(os.path.join(args.results, "summary.csv"), "w", newline="",
              encoding="utf-8") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(found)
    stages = [k for k in keys if k.startswith("s_per_epoch_")]
    lines = ["| seed | training | teacher dev | teacher test | student dev | student test | "
             + " | ".join(f"s/epoch {k[len('s_per_epoch_'):]}" for k in stages) + " | wall |",
             "|---:|---|" + "---:|" * (5 + len(stages))]
    reference = {r["seed"]: r for r in found if r["precision"] == "float32"}
    for r in found:
        base = reference.get(r["seed"])
        cells = []
        for k in stages:
            cell = f"{r[k]:.0f}" if k in r else "—"
            if base is not r and base and k in base and k in r:
                cell += f" ({base[k] / r[k]:.2f}x)"
            cells.append(cell)
        lines.append(f"| {r['seed']} | {r['precision']} | {100 * r['teacher_dev_f1']:.1f} | "
                     f"{100 * r['teacher_f1']:.1f} | {100 * r['student_dev_f1']:.1f} | "
                     f"{100 * r['student_f1']:.1f} | " + " | ".join(cells)
                     + f" | {r['wall_s'] / 60:.1f} min |")
    table = "\n".join(lines) + (
        "\n\nF1: seqeval entity F1 in %, scored in float32 (a mixed run's models are rebuilt in "
        "float32 after training). s/epoch: each stage's fastest epoch in seconds (the first "
        "also traces the step), its dev evaluation included; (Nx): the float32 run's time / "
        "this run's, same seed. Wall: the whole run.\n")
    with open(os.path.join(args.results, "summary.md"), "w", encoding="utf-8") as f:
        f.write(table)
    return table


if __name__ == "__main__":
    sys.exit(main())
