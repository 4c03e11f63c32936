"""Reproduces the WikiANN results: one multilingual teacher, students of three sizes, ablations.

    python scripts/reproduce_wikiann.py --data ../shared/data/wikiann \
        --teacher /path/to/multilingual-e5-small --output_dir runs/wikiann \
        --results results/wikiann --readme docs/wikiann.md

On a machine with the hub: --teacher=xlm-roberta-base (fine-tuned here), or a ready NER checkpoint
such as jplu/tf-xlm-r-ner-40-lang (used as is; the rows then compare it with its students).

What it does, resumably (rerun the same command after an interruption: finished runs are skipped,
an interrupted one continues from its last checkpoint):
  1. samples --train_per_lang / --dev_per_lang / --test_per_lang sentences of every language
     (seeded, written once under OUTPUT_DIR/data/<lang>/) — the CPU budget, stated in the table;
  2. runs `run_distil.py --flagfile=flags/wikiann.cfg` once per row of RUNS: the first run
     fine-tunes the joint multilingual teacher, every later run reuses it (--teacher_checkpoint);
  3. writes RESULTS/summary.csv, summary.md and kept_vs_speedup.png from the runs' metrics.json,
     and with --readme replaces the table between the README's wikiann markers.

Speed. Each run times its teacher and student back to back, but when other jobs share the CPU
those numbers are noise. `--retime` (run it on an otherwise idle machine) times the teacher and
every row's student architecture again in one process, batch 32 x 128, and writes
RESULTS/timing.json, which the tables then use for tokens/s and speed-up.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from xtremedistil_tf import data as data_lib  # noqa: E402  (light: no TensorFlow import)

LANGS = "en,de,es,ar,fi,pt,vi,hu,sw,af"
BEGIN, END = "<!-- wikiann:begin -->", "<!-- wikiann:end -->"

# (row name, what it is, extra flags). The first row also fine-tunes the teacher.
RUNS = [
    ("cut-l6-h384", "student: 6 of the teacher's 12 layers (0,2,..,10)",
     ["--student=teacher:0,2,4,6,8,10"]),
    ("l6-h256", "student: xtremedistil-l6-h256 shape, SVD-compressed teacher embeddings",
     ["--student=l6-h256"]),
    ("l6-h384", "student: xtremedistil-l6-h384 shape, teacher embeddings",
     ["--student=l6-h384"]),
    ("l6-h256 no-stage1", "ablation: without the representation stage",
     ["--student=l6-h256", "--stages=logits,labels"]),
    ("l6-h256 no-unfreezing", "ablation: all layers train in every stage",
     ["--student=l6-h256", "--nogradual_unfreezing"]),
    ("l6-h256 kl", "ablation: KL with temperature 2 instead of MSE on logits",
     ["--student=l6-h256", "--logit_loss=kl"]),
    ("l6-h256 last-layer", "ablation: representations learn the teacher's last layer",
     ["--student=l6-h256", "--teacher_layer=last"]),
    ("l6-h256 random-emb", "ablation: random word embeddings instead of compressed teacher ones",
     ["--student=l6-h256", "--student_embeddings=random", "--nofreeze_embeddings"]),
    ("l6-h256 long", "student: l6-h256 trained longer (all layers, up to 8 epochs per stage, "
     "learning rate 5e-4)",
     ["--student=l6-h256", "--nogradual_unfreezing", "--epochs=8", "--patience=2",
      "--learning_rate=5e-4"]),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder with <lang>/{train,dev,test}.conll")
    p.add_argument("--teacher", required=True, help="hub id or folder of the teacher")
    p.add_argument("--output_dir", default="runs/wikiann")
    p.add_argument("--results", default="results/wikiann")
    p.add_argument("--readme", default="", help="README whose wikiann table is regenerated")
    p.add_argument("--langs", default=LANGS)
    p.add_argument("--retime", action="store_true",
                   help="time teacher and students again in one process (idle machine)")
    p.add_argument("--train_per_lang", type=int, default=1000)
    p.add_argument("--dev_per_lang", type=int, default=500)
    p.add_argument("--test_per_lang", type=int, default=2000)
    add_run_arguments(p)
    args = p.parse_args(argv)

    langs = [x for x in args.langs.split(",") if x]
    runs = select_rows(p, args, RUNS)
    if not args.summary_only:
        files = sample_data(args.data, os.path.join(args.output_dir, "data"), langs, args)
        for name, _, flags in runs:
            if not run_row(name, flags, files, args):
                return 1
    if args.retime:
        retime(args)
    rows = summarise(args.output_dir, langs, args)
    if not rows:
        print("no finished runs yet", file=sys.stderr)
        return 1
    write_results(rows, langs, args)
    return 0


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments every reproduction script shares: row selection, seed, extra flags."""
    p.add_argument("--only", default="", help="comma-separated row names (default: all)")
    p.add_argument("--summary_only", action="store_true", help="only rebuild the tables")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("extra", nargs="*", help="more run_distil.py flags for every run (after --)")
    from xtremedistil_tf import startup

    startup.add_verbosity_argument(p)


def select_rows(p: argparse.ArgumentParser, args, rows: list,
                keep_first: bool = True) -> list:
    """The rows `--only` names, with the first unless `keep_first` is False (it fine-tunes the
    shared teacher, which a given fine-tuned teacher replaces)."""
    chosen = [r for r in rows if not args.only or r[0] in args.only.split(",")]
    if args.only and not chosen:
        p.error(f"--only={args.only}: no such row; rows: {', '.join(r[0] for r in rows)}")
    if keep_first and chosen[0] is not rows[0]:
        chosen.insert(0, rows[0])
    return chosen


def sample_split(src: str, dst: str, lang: str, split: str, n: int, seed: int) -> str:
    """A seeded sample of `n` sentences (0: all) of src/lang/split.conll, written once under
    dst; returns its run_distil.py file spec "lang=path"."""
    out = os.path.join(dst, lang, f"{split}.conll")
    if not os.path.exists(out):
        sentences = data_lib.read_conll(os.path.join(src, lang, f"{split}.conll"))
        if n and n < len(sentences):
            keep = sorted(random.Random(f"{seed}/{lang}/{split}").sample(
                range(len(sentences)), n))
            sentences = [sentences[i] for i in keep]
        os.makedirs(os.path.dirname(out), exist_ok=True)
        data_lib.write_conll(out, sentences)
    return f"{lang}={out}"


def sample_data(src: str, dst: str, langs: list[str], args) -> dict[str, str]:
    """Seeded samples of every split and language; returns the run_distil.py file flags."""
    sizes = {"train": args.train_per_lang, "dev": args.dev_per_lang, "test": args.test_per_lang}
    return {split: ",".join(sample_split(src, dst, lang, split, n, args.seed) for lang in langs)
            for split, n in sizes.items()}


EXTRA_FLAGS = "extra_flags.json"  # in a run folder: the flags given after `--` (a JSON list)


def extra_flags(folder: str) -> list[str]:
    """The flags the run in `folder` was given after `--` ([] without them, or for a run that
    started before run folders kept them)."""
    try:
        with open(os.path.join(folder, EXTRA_FLAGS), encoding="utf-8") as f:
            return json.load(f)
    except OSError:
        return []


def run_dir(args, name: str) -> str:
    return os.path.join(args.output_dir, "runs", name.replace(" ", "_"))


def run_row(name: str, flags: list[str], files: dict, args, first: str = RUNS[0][0]) -> bool:
    """Runs one row's run_distil.py unless it finished; rows after `first` reuse its teacher."""
    out = run_dir(args, name)
    if os.path.exists(os.path.join(out, "metrics.json")):
        print(f"[{name}] finished earlier: {out}", file=sys.stderr)
        return True
    cmd = [sys.executable, os.path.join(REPO, "run_distil.py"),
           f"--flagfile={os.path.join(REPO, 'flags', 'wikiann.cfg')}",
           f"--teacher={args.teacher}", *[f"--{k}_file={v}" for k, v in files.items()],
           f"--output_dir={out}", f"--export_dir={os.path.join(args.output_dir, 'saved_models')}",
           f"--export_name={name.replace(' ', '_')}", f"--seed={args.seed}", *flags, *args.extra]
    if name != first:
        cmd.append(f"--teacher_checkpoint={os.path.join(run_dir(args, first), 'teacher')}")
    print(f"[{name}] {' '.join(cmd)}", file=sys.stderr, flush=True)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, EXTRA_FLAGS), "w", encoding="utf-8") as f:
        json.dump(list(args.extra), f)  # what the row ran with beyond its own flags
    start = time.time()
    with open(os.path.join(out, "log.txt"), "a", encoding="utf-8") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    print(f"[{name}] exit {code} after {time.time() - start:.0f} s; log: {out}/log.txt",
          file=sys.stderr, flush=True)
    return code == 0


def _tokens_per_s(entry: dict) -> float:
    timing = entry.get("timing", {})
    tokens = timing.get("batch_size", 32) * timing.get("seq_length", 128)
    return tokens / (entry["ms_per_batch"] / 1000)


def retime(args, batch_size: int = 32, seq_length: int = 128) -> dict:
    """Times the teacher and each row's student architecture in this process; writes and
    returns RESULTS/timing.json ({"teacher": ms, row: ms, ...}). Weights do not change the
    cost, so the students are built fresh from their specs."""
    import xtremedistil_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
    from xtremedistil_tf import startup

    startup.quiet_tensorflow(args.verbosity)
    from xtremedistil_tf import models, speed, students

    with open(os.path.join(run_dir(args, RUNS[0][0]), "teacher", "labels.txt"),
              encoding="utf-8") as f:
        labels = f.read().split()
    tok = models.load_tokenizer(args.teacher)
    teacher, _, _ = models.build_teacher(args.teacher, labels, 0.1)
    ms = {"teacher": speed.time_forward(teacher, len(tok), batch_size, seq_length)}
    by_spec: dict[str, dict] = {}
    for name, _, flags in RUNS:
        spec = next(f.split("=", 1)[1] for f in flags if f.startswith("--student="))
        if spec not in by_spec:
            student = students.build_student(spec, teacher, len(labels), len(tok), tok.pad_token_id,
                                           seq_length, 0.1, False)
            by_spec[spec] = speed.time_forward(student, len(tok), batch_size, seq_length)
        ms[name] = by_spec[spec]
    timing = {k: v["ms_per_batch"] for k, v in ms.items()}
    os.makedirs(args.results, exist_ok=True)
    with open(os.path.join(args.results, "timing.json"), "w", encoding="utf-8") as f:
        json.dump({"ms_per_batch": timing, "batch_size": batch_size, "seq_length": seq_length,
                   "detail": ms}, f, indent=1)
    print(f"re-timed: {timing}", file=sys.stderr)
    return timing


def _teacher_seconds(folder: str) -> float:
    """Fine-tuning time of the teacher, from the run that trained it (0 if it was not)."""
    try:
        with open(os.path.join(folder, "state.json"), encoding="utf-8") as f:
            return float(json.load(f)["done"]["teacher"]["seconds"])
    except (OSError, KeyError, TypeError):
        return 0.0


def summarise(output_dir: str, langs: list[str], args) -> list[dict]:
    """One row for the teacher and one per finished student run."""
    rows = []
    for name, what, _ in RUNS:
        path = os.path.join(run_dir(args, name), "metrics.json")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        entries = []
        if not rows:  # the first finished run also describes the teacher
            doc["teacher"]["wall_seconds"] = _teacher_seconds(run_dir(args, name))
            entries.append(("teacher", "teacher: fine-tuned on all languages at once",
                            doc["teacher"], 1.0))
        entries.append((name, what, doc["student"], doc["speedup"]))
        for model, desc, entry, speedup in entries:
            per_lang = {lang: entry["per_language"].get(lang, {}).get("f1", float("nan"))
                        for lang in langs}
            row = {"model": model, "what": desc,
                   "avg_f1": sum(per_lang.values()) / len(langs),
                   "params": entry["params"], "size_mb": entry["size_mb"],
                   "tokens_per_s": _tokens_per_s(entry), "speedup": speedup,
                   "wall_s": entry.get("wall_seconds", doc.get("wall_seconds", 0.0))}
            row.update({f"f1_{lang}": v for lang, v in per_lang.items()})
            row["test_sentences"] = {lang: entry["per_language"].get(lang, {}).get("sentences", 0)
                                     for lang in langs}
            rows.append(row)
    timing_path = os.path.join(args.results, "timing.json")
    if rows and os.path.exists(timing_path):  # one idle-machine measurement beats per-run ones
        with open(timing_path, encoding="utf-8") as f:
            timing = json.load(f)
        ms, tokens = timing["ms_per_batch"], timing["batch_size"] * timing["seq_length"]
        for row in rows:
            if row["model"] in ms:
                row["tokens_per_s"] = tokens / (ms[row["model"]] / 1000)
                row["speedup"] = ms["teacher"] / ms[row["model"]]
        args.retimed = True
    if rows:
        for row in rows:
            row["kept"] = row["avg_f1"] / rows[0]["avg_f1"] if rows[0]["avg_f1"] else 0.0
    return rows


def write_results(rows: list[dict], langs: list[str], args) -> None:
    os.makedirs(args.results, exist_ok=True)
    columns = ["model", "avg_f1", "kept", "params", "size_mb", "tokens_per_s", "speedup",
               "wall_s", *[f"f1_{lang}" for lang in langs], "what"]
    csv_path = os.path.join(args.results, "summary.csv")
    with open(csv_path + ".tmp", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v)
                             for k, v in row.items() if k in columns})
    os.replace(csv_path + ".tmp", csv_path)
    table = markdown(rows, langs, args)
    with open(os.path.join(args.results, "summary.md"), "w", encoding="utf-8") as f:
        f.write(table)
    plot(rows, os.path.join(args.results, "kept_vs_speedup.png"))
    if args.readme:
        update_readme(args.readme, table)
    print(table)


def markdown(rows: list[dict], langs: list[str], args) -> str:
    head = ["model", *langs, "avg", "kept", "params", "MB", "tokens/s", "speed-up", "wall"]
    rule = "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"
    lines = ["| " + " | ".join(head) + " |", rule]
    for r in rows:
        cells = [r["model"], *[f"{100 * r[f'f1_{lang}']:.1f}" for lang in langs],
                 f"**{100 * r['avg_f1']:.1f}**", f"{100 * r['kept']:.0f}%",
                 f"{r['params'] / 1e6:.1f}M", f"{r['size_mb']:.0f}", f"{r['tokens_per_s']:.0f}",
                 f"{r['speedup']:.2f}x", f"{r['wall_s'] / 60:.0f} min" if r["wall_s"] else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    counts = rows[0].get("test_sentences", {})
    smaller = [f"{lang} {n}" for lang, n in counts.items()
               if args.test_per_lang and n < args.test_per_lang]
    test = f"{args.test_per_lang or 'all'} test sentences per language"
    if smaller:
        test += f" ({', '.join(smaller)}: their whole test split)"
    if counts:
        test += f", {sum(counts.values())} in all"
    note = (f"\nEntity F1 (seqeval, strict IOB2) on {test}; trained on "
            f"{args.train_per_lang or 'all'} sentences per language "
            f"(dev: {args.dev_per_lang or 'all'}); tokens/s and speed-up: batch 32 x 128 "
            "sub-words, fp32 `tf.function` on this CPU, "
            + ("all models timed in one process on an otherwise idle CPU (`--retime`). "
               if getattr(args, "retimed", False) else
               "teacher and student timed in the same process during each run. ")
            + "Wall time: the teacher's fine-tuning; for a student its whole run (its stages, "
            "caching the teacher's outputs, scoring both, export), on a CPU shared with other "
            "jobs.\n")
    return "\n".join(lines) + "\n" + note


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        ax.scatter(r["speedup"], 100 * r["kept"], color="k" if r["model"] == "teacher" else "C0")
        ax.annotate(r["model"], (r["speedup"], 100 * r["kept"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("speed-up over the teacher (CPU, batch 32x128)")
    ax.set_ylabel("% of the teacher's average F1 kept")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def update_readme(path: str, table: str, begin: str = BEGIN, end_marker: str = END) -> None:
    """Replaces what stands between the two markers in `path` with `table` (atomically)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if begin not in text or end_marker not in text:
        raise SystemExit(f"{path}: no {begin} ... {end_marker} markers to put the table between")
    start, end = text.index(begin) + len(begin), text.index(end_marker)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text[:start] + "\n" + table + text[end:])
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    sys.exit(main())
