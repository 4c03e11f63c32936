"""WikiANN at scale: students cut from the teacher by weight selection, distilled on every
unlabelled training sentence we have, with the ablations and the transfer-size curve.

    python scripts/reproduce_wikiann_scale.py --data ../shared/data/wikiann \
        --transfer_from ../shared/data/wikiann,../shared/data/conll2002 \
        --teacher ../models/multilingual-e5-small --output_dir runs/wikiann_scale \
        --results results/wikiann_scale --readme README.md

Same protocol as scripts/reproduce_wikiann.py (seeded per-language samples of train/dev/test;
the test sample is the same sentences as that script's), with more labelled sentences for the
teacher (--train_per_lang 5000) and a transfer set built from the *train* splits of every
language under --transfer_from (dev and test are never transfer text), their tags dropped and
the labelled training sample removed (those sentences are in the transfer set already, once).
Nested seeded samples of it (10k within 50k within all) give the transfer-size curve.

Resumable like the other scripts: rerun the same command; finished rows are skipped, an
interrupted row continues from its last checkpoint. --teacher_checkpoint reuses a teacher
fine-tuned earlier (the teacher/ folder of a run); otherwise the first row fine-tunes it. The
teacher's outputs on each transfer set are kept under OUTPUT_DIR/teacher_cache
(`--teacher_cache_dir`) and shared by the rows that distil on the same text.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import random
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
sys.path.insert(0, REPO)

import reproduce_wikiann as rw  # noqa: E402

from xtremedistil_tf import data as data_lib  # noqa: E402

BEGIN, END = "<!-- wikiann-scale:begin -->", "<!-- wikiann-scale:end -->"
# Settings every row shares on top of flags/wikiann.cfg (chosen on dev at 20k sentences).
COMMON = ["--student_init=select", "--nogradual_unfreezing", "--epochs=3", "--patience=1",
          "--learning_rate=2e-4"]
ALL = 0  # transfer size: every sentence of the pool
ROUNDS = 3  # --retime: timing rounds per model
# One student shape and recipe at several transfer sizes (XtremeDistil's Table 3).
CURVE = ("l4-h256 select 10k", "l4-h256 select 20k", "l4-h256 select 50k", "l4-h256")

# (row, what it is, flags, transfer sentences, group). Rows run in this order: the 20k slice
# first (settings are chosen there on dev: l6-h256 kept 97 % of the teacher's test average;
# without the representation stage, l4-h256's dev F1 after the logits stage fell from 0.830 to
# 0.792, so every row keeps it), then the full-scale students, the curve (of the >= 5x
# student, l4-h256), and the ablations of the start.
ROWS = [
    ("l6-h256 select 20k", "xtremedistil-l6-h256 shape, weight selection, 20k transfer",
     ["--student=l6-h256", *COMMON], 20_000, "main"),
    ("l4-h256 select 20k", "4 blocks x 256, weight selection, 20k transfer",
     ["--student=l4-h256", *COMMON], 20_000, "main"),
    ("l4-h256 select 20k no-stage1", "as l4-h256 select 20k, without the representation stage",
     ["--student=l4-h256", *COMMON, "--stages=logits,labels"], 20_000, "ablation"),
    ("l4-h256", "4 blocks x 256, weight selection, all transfer text",
     ["--student=l4-h256", *COMMON], ALL, "main"),
    ("l3-h256 select 20k", "3 blocks x 256, weight selection, 20k transfer",
     ["--student=l3-h256", *COMMON], 20_000, "main"),
    ("l6-h256", "xtremedistil-l6-h256 shape, weight selection, all transfer text",
     ["--student=l6-h256", *COMMON], ALL, "main"),
    ("l4-h256 select 50k", "as l4-h256, 50k transfer sentences",
     ["--student=l4-h256", *COMMON], 50_000, "curve"),
    ("l4-h256 select 10k", "as l4-h256, 10k transfer sentences",
     ["--student=l4-h256", *COMMON], 10_000, "curve"),
    # The start's ablation is on the >= 5x student (against "l4-h256 select 20k"): a random
    # l4-h256 preset has 4 heads of 64, where a selected one keeps the teacher's 8 of 32.
    ("l4-h256 svd 20k", "random blocks, SVD-compressed teacher embeddings (before), 20k",
     ["--student=l4-h256", *COMMON, "--student_init=random"], 20_000, "ablation"),
    ("l4-h256 random 20k", "random blocks and random embeddings, 20k",
     ["--student=l4-h256", *COMMON, "--student_init=random", "--student_embeddings=random",
      "--nofreeze_embeddings"], 20_000, "ablation"),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder with <lang>/{train,dev,test}.conll")
    p.add_argument("--transfer_from", required=True,
                   help="comma-separated folders whose <lang>/train.conll make the transfer set")
    p.add_argument("--teacher", required=True, help="hub id or folder of the teacher")
    p.add_argument("--teacher_checkpoint", default="",
                   help="teacher/ folder of an earlier run with the same teacher and labels")
    p.add_argument("--output_dir", default="runs/wikiann_scale")
    p.add_argument("--results", default="results/wikiann_scale")
    p.add_argument("--readme", default="")
    p.add_argument("--langs", default=rw.LANGS)
    p.add_argument("--train_per_lang", type=int, default=5000)
    p.add_argument("--dev_per_lang", type=int, default=500)
    p.add_argument("--test_per_lang", type=int, default=2000)
    p.add_argument("--retime", action="store_true",
                   help="time teacher and students again in one process (idle machine)")
    rw.add_run_arguments(p)
    args = p.parse_args(argv)
    langs = [x for x in args.langs.split(",") if x]
    rows = [r for r in ROWS if not args.only or r[0] in args.only.split(",")]
    if args.only and not rows:
        p.error(f"--only={args.only}: no such row; rows: {', '.join(r[0] for r in ROWS)}")
    if not args.summary_only:
        files = rw.sample_data(args.data, os.path.join(args.output_dir, "data"), langs, args)
        pool = transfer_pool(args.transfer_from.split(","), files["train"], args.seed)
        print(f"transfer pool: {len(pool)} sentences", file=sys.stderr)
        first = rows[0][0]
        for name, _, flags, size, _ in rows:
            # Rows with the same transfer text (the 20k ablation; l6-h256 and l4-h256 on all
            # of it) run the teacher on it once: the cache's key tells them apart.
            extra = [f"--transfer_file={write_transfer(pool, size, args.output_dir)}",
                     f"--teacher_cache_dir={os.path.join(args.output_dir, 'teacher_cache')}"]
            if args.teacher_checkpoint:  # every row reuses it (none fine-tunes a teacher)
                extra.append(f"--teacher_checkpoint={args.teacher_checkpoint}")
            if not rw.run_row(name, flags + extra, files, args,
                              first=name if args.teacher_checkpoint else first):
                return 1
    if args.retime:
        retime(args)
    table = summarise(args, langs)
    if table is None:
        print("no finished runs yet", file=sys.stderr)
        return 1
    return 0


def transfer_pool(folders: list[str], train_spec: str, seed: int) -> list[data_lib.Sentence]:
    """Every sentence of the `<lang>/train.conll` files under `folders` (tags dropped), minus
    the labelled training sample, in a seeded random order (so that prefixes are samples)."""
    labelled = {(s.lang, s.words) for s in data_lib.read_labelled_files(train_spec)}
    pool, seen = [], set()
    for folder in folders:
        for path in sorted(glob.glob(os.path.join(folder, "*", "train.conll"))):
            lang = os.path.basename(os.path.dirname(path))
            for s in data_lib.read_unlabelled(path, lang=lang):
                key = (lang, s.words)
                if key not in labelled and key not in seen:
                    seen.add(key)
                    pool.append(s)
    random.Random(f"{seed}/transfer").shuffle(pool)
    return pool


def write_transfer(pool: list, size: int, output_dir: str) -> str:
    """Writes the first `size` pool sentences (0: all) once, one file per language; returns
    the `--transfer_file` specs."""
    chosen = pool[:size] if size else pool
    folder = os.path.join(output_dir, "transfer", str(size or "all"))
    by_lang: dict[str, list] = {}
    for s in chosen:
        by_lang.setdefault(s.lang, []).append(s)
    specs = []
    for lang in sorted(by_lang):
        path = os.path.join(folder, f"{lang}.conll")
        if not os.path.exists(path):
            os.makedirs(folder, exist_ok=True)
            data_lib.write_conll(path, by_lang[lang])
        specs.append(f"{lang}={path}")
    return ",".join(specs)


def retime(args) -> dict:
    """Times teacher and every row's student shape in one process (batch 32 x 128, the fastest
    of ROUNDS interleaved rounds); writes RESULTS/timing.json. Weight-selected students keep the
    teacher's head size."""
    import numpy as np

    import xtremedistil_tf  # noqa: F401
    from xtremedistil_tf import models, speed, students

    folder = args.teacher_checkpoint or os.path.join(rw.run_dir(args, ROWS[0][0]), "teacher")
    with open(os.path.join(folder, "labels.txt"), encoding="utf-8") as f:
        labels = f.read().split()
    tok = models.load_tokenizer(args.teacher)
    teacher, _, _ = models.build_teacher(args.teacher, labels, 0.1)
    ids = np.full((2, 8), 5, np.int32)
    sample = [{"input_ids": ids, "attention_mask": np.ones_like(ids)}]
    models_by_key = {"teacher": teacher}
    key_of = {"teacher": "teacher"}
    for name, _, flags, _, _ in ROWS:
        spec = [f.split("=", 1)[1] for f in flags if f.startswith("--student=")][-1]
        init = [f.split("=", 1)[1] for f in flags if f.startswith("--student_init=")][-1]
        if (spec, init) not in models_by_key:
            models_by_key[spec, init] = students.build_student(
                spec, teacher, len(labels), len(tok), tok.pad_token_id, 128, 0.1, False,
                init=init, select_batches=sample)
        key_of[name] = (spec, init)
    best = speed.fastest_of(models_by_key, len(tok), ROUNDS)
    ms = {name: best[key, 128] for name, key in key_of.items()}
    timing = {k: v["ms_per_batch"] for k, v in ms.items()}
    os.makedirs(args.results, exist_ok=True)
    with open(os.path.join(args.results, "timing.json"), "w", encoding="utf-8") as f:
        json.dump({"ms_per_batch": timing, "batch_size": 32, "seq_length": 128, "detail": ms},
                  f, indent=1)
    print(f"re-timed: {timing}", file=sys.stderr)
    return timing


def _one_attempt_teacher_seconds(folder: str) -> float:
    """The teacher's fine-tuning time in the run `folder`, when that run had one attempt (a
    resumed stage's seconds are its last attempt's); else 0 (shown as —)."""
    try:
        with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as f:
            if json.load(f).get("attempts") != 1:
                return 0.0
    except (OSError, ValueError):
        return 0.0
    return rw._teacher_seconds(folder)


def summarise(args, langs: list[str]) -> str | None:
    """Writes summary.csv, the two tables (students; ablation and curve) and the plots."""
    rows = []
    teacher_seconds = (_one_attempt_teacher_seconds(
        os.path.dirname(args.teacher_checkpoint.rstrip("/"))) if args.teacher_checkpoint else 0.0)
    for name, what, _, size, group in ROWS:
        path = os.path.join(rw.run_dir(args, name), "metrics.json")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        if not rows:
            t_sec = teacher_seconds or _one_attempt_teacher_seconds(rw.run_dir(args, name))
            rows.append(_row("teacher", f"fine-tuned on {args.train_per_lang} sentences per "
                             "language", doc["teacher"], 1.0, langs, 0, "main", t_sec))
        # Runs written before `attempts` existed reported their last attempt only: no wall.
        # The run that fine-tuned the teacher shows that time on the teacher row, not its own.
        wall = doc.get("wall_seconds", 0.0) if "attempts" in doc else 0.0
        if wall:
            wall = max(0.0, wall - rw._teacher_seconds(rw.run_dir(args, name)))
        rows.append(_row(name, what, doc["student"], doc["speedup"], langs,
                         doc.get("data", {}).get("transfer", size), group, wall))
    if not rows:
        return None
    timing_path = os.path.join(args.results, "timing.json")
    retimed = os.path.exists(timing_path)
    if retimed:
        with open(timing_path, encoding="utf-8") as f:
            timing = json.load(f)
        for row in rows:
            if row["model"] in timing["ms_per_batch"]:
                row["speedup"] = (timing["ms_per_batch"]["teacher"]
                                  / timing["ms_per_batch"][row["model"]])
    for row in rows:
        row["kept"] = row["avg_f1"] / rows[0]["avg_f1"] if rows[0]["avg_f1"] else 0.0
    os.makedirs(args.results, exist_ok=True)
    columns = ["model", "group", "transfer", "avg_f1", "kept", "params", "size_mb", "speedup",
               "wall_s", *[f"f1_{lang}" for lang in langs], "what"]
    with open(os.path.join(args.results, "summary.csv.tmp"), "w", newline="",
              encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v)
                             for k, v in row.items()})
    os.replace(os.path.join(args.results, "summary.csv.tmp"),
               os.path.join(args.results, "summary.csv"))
    table = markdown(rows, langs, args, retimed)
    with open(os.path.join(args.results, "summary.md"), "w", encoding="utf-8") as f:
        f.write(table)
    plot(rows, os.path.join(args.results, "scale.png"))
    curve = teacher_curve(args)
    if curve:
        table += "\nTeacher fine-tuning, dev F1 per epoch: " + ", ".join(
            f"{100 * r['dev_f1']:.1f}" for r in curve) + ".\n"
    if args.readme:
        rw.update_readme(args.readme, table, BEGIN, END)
    print(table)
    return table


def teacher_curve(args) -> list[dict]:
    """The teacher's dev F1 per fine-tuning epoch (from the run that trained it), also written
    to RESULTS/teacher_curve.csv."""
    run = (os.path.dirname(args.teacher_checkpoint.rstrip("/")) if args.teacher_checkpoint
           else rw.run_dir(args, ROWS[0][0]))
    try:
        with open(os.path.join(run, "state.json"), encoding="utf-8") as f:
            history = json.load(f)["done"]["teacher"]["history"]
    except (OSError, KeyError, TypeError):
        return []
    rows = [{"train_per_lang": args.train_per_lang, "epoch": h["epoch"], "dev_f1": h["dev_f1"],
             "seconds": h.get("seconds", 0.0)} for h in history if "dev_f1" in h]
    with open(os.path.join(args.results, "teacher_curve.csv"), "w", newline="",
              encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["train_per_lang", "epoch", "dev_f1", "seconds"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _row(model, what, entry, speedup, langs, transfer, group, wall) -> dict:
    per_lang = {lang: entry["per_language"].get(lang, {}).get("f1", float("nan"))
                for lang in langs}
    row = {"model": model, "what": what, "group": group, "transfer": transfer,
           "avg_f1": sum(per_lang.values()) / len(langs), "params": entry["params"],
           "size_mb": entry["size_mb"], "speedup": speedup, "wall_s": wall}
    row.update({f"f1_{lang}": v for lang, v in per_lang.items()})
    return row


def markdown(rows: list[dict], langs: list[str], args, retimed: bool) -> str:
    def table(selected, title):
        head = ["model", "transfer", *langs, "avg", "kept", "params", "speed-up", "wall"]
        lines = [f"**{title}**", "", "| " + " | ".join(head) + " |",
                 "|" + "|".join(["---", "---:"] + ["---:"] * (len(head) - 2)) + "|"]
        for r in selected:
            transfer = "—" if r["model"] == "teacher" else f"{r['transfer'] / 1000:.0f}k"
            lines.append("| " + " | ".join([
                r["model"], transfer, *[f"{100 * r[f'f1_{lang}']:.1f}" for lang in langs],
                f"**{100 * r['avg_f1']:.1f}**", f"{100 * r['kept']:.1f}%",
                f"{r['params'] / 1e6:.1f}M", f"{r['speedup']:.2f}x",
                f"{r['wall_s'] / 3600:.1f} h" if r["wall_s"] else "—"]) + " |")
        return "\n".join(lines)

    main_rows = [r for r in rows if r["group"] == "main"]
    curve = sorted((r for r in rows if r["group"] == "curve"), key=lambda r: r["transfer"])
    other = [rows[0], *curve] + [r for r in rows if r["group"] == "ablation"]
    note = (f"\nEntity F1 (seqeval, strict IOB2) on {args.test_per_lang} test sentences per "
            f"language (sw, af: their whole 1000); teacher trained on {args.train_per_lang} "
            f"sentences per language (dev {args.dev_per_lang}). Transfer: unlabelled train "
            "sentences of every WikiANN language and CoNLL-2002 es/nl, minus the labelled "
            "sample. Speed-up: batch 32 x 128, fp32, "
            + (f"all models timed in one process on an idle CPU, each its fastest of {ROUNDS} "
               "interleaved rounds (this VM's speed drifts by 10-20 %). " if retimed else
               "teacher and student timed during each run (a shared CPU: noisy). ")
            + "Wall: the row's whole run on this 2-core CPU (teacher outputs, distillation, "
            "test), every resumed attempt counted (—: a run from before that was counted); "
            "teacher: its fine-tuning.\n")
    return (table(main_rows, "Students") + "\n\n"
            + table(other, "Transfer-size curve (l4-h256) and the start's ablation "
                    "(20k transfer sentences)")
            + "\n" + note)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for r in rows:
        if r["group"] == "main" or r["model"] == "teacher":
            left.scatter(r["speedup"], 100 * r["kept"], color="k" if r["model"] == "teacher"
                         else "C0")
            left.annotate(r["model"], (r["speedup"], 100 * r["kept"]), fontsize=8,
                          xytext=(4, 4), textcoords="offset points")
    left.set_xlabel("speed-up over the teacher (CPU, batch 32x128)")
    left.set_ylabel("% of the teacher's average F1 kept")
    left.grid(alpha=0.3)
    curve = sorted((r for r in rows if r["model"] in CURVE), key=lambda r: r["transfer"])
    if curve:
        right.plot([r["transfer"] for r in curve], [100 * r["kept"] for r in curve], "o-")
        right.set_xscale("log")
    right.set_xlabel(f"transfer sentences ({CURVE[-1]}, weight selection)")
    right.set_ylabel("% of the teacher's average F1 kept")
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)



if __name__ == "__main__":
    sys.exit(main())
