"""Test F1 of a trained student through each export: SavedModel, LiteRT float32, LiteRT
dynamic-range int8, and the same with the vocabulary trimmed (`--trim_vocab`), with file sizes.

    python scripts/evaluate_exports.py --run_dir runs/wikiann_scale/runs/l6-h256 \
        --output results/wikiann_scale/exports [--formats savedmodel,litert,litert_int8] \
        [--trim [--trim_text FILES]] [--test_file en=test.conll,...]

Every export is written to a temporary folder from the run's `student/` (as
`python -m xtremedistil_tf.export` writes it), read back the way `predict` reads it
(`predict.ExportedTagger`: the export's own tokenizer and labels from `assets/`), and tags the
run's test files (or `--test_file`). Reported per export: the model file's size (SavedModel:
`saved_model.pb` + `variables/`; LiteRT: `model.tflite`), the whole folder's (with the
tokenizer), micro entity F1 (seqeval strict IOB2, as `metrics.json`), the average of the
per-language F1 (the README tables' `avg F1`), the share of words tagged as the SavedModel tags
them, and the seconds it took to tag the set (not a benchmark: see `xtremedistil_tf.benchmark`
for speed). The first row is the run's own test score (`metrics.json`, the model in memory).

Writes OUTPUT.md and OUTPUT.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import xtremedistil_tf  # noqa: F401,E402  (TF_USE_LEGACY_KERAS before TensorFlow)
from xtremedistil_tf import startup  # noqa: E402

if __name__ == "__main__":  # TensorFlow's start-up lines stay out of the output (-v 1: back)
    startup.quiet_tensorflow(startup.verbosity_from_argv(sys.argv[1:]))

import numpy as np  # noqa: E402

from xtremedistil_tf import (  # noqa: E402
    data as data_lib,
    evaluate,
    export,
    labels as labels_lib,
    predict,
)

FORMATS = ("savedmodel", "litert", "litert_int8")
WHAT = {"savedmodel": "SavedModel float32", "litert": "LiteRT float32 (XNNPACK)",
        "litert_int8": "LiteRT dynamic-range int8"}


def files_mb(*paths: str) -> float:
    """MB (10^6 bytes) of the given files and of every file under the given folders."""
    total = 0
    for path in paths:
        if os.path.isfile(path):
            total += os.path.getsize(path)
        for root, _, files in os.walk(path):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total / 1e6


def model_mb(version_dir: str) -> float:
    """The model file's MB: `model.tflite`, or `saved_model.pb` + `variables/`."""
    tflite = os.path.join(version_dir, "model.tflite")
    if os.path.isfile(tflite):
        return files_mb(tflite)
    return files_mb(os.path.join(version_dir, "saved_model.pb"),
                    os.path.join(version_dir, "variables"))


def language_average(per_language: dict, f1: float) -> float:
    """The mean of the per-language F1 (the README tables' `avg`), or `f1` without languages."""
    return float(np.mean([m["f1"] for m in per_language.values()])) if per_language else f1


def score(tags, sentences) -> dict:
    gold = [list(s.tags) for s in sentences]
    scores = evaluate.score_tags(gold, tags, [s.lang for s in sentences])
    per_lang = scores.get("per_language", {})
    return {"f1": scores["f1"], "avg_f1": language_average(per_lang, scores["f1"]),
            "per_language": {k: v["f1"] for k, v in per_lang.items()}}


def evaluate_export(name: str, version_dir: str, sentences, reference, max_seq_length: int,
                    batch_size: int) -> tuple[dict, list[list[str]]]:
    """The export's row of the table, and its tags (the first export's are the reference)."""
    tagger = predict.ExportedTagger(version_dir)
    t0 = time.time()
    tags = tagger.tag(sentences, batch_size, max_seq_length)
    seconds = time.time() - t0
    words = sum(len(t) for t in tags)
    same = (sum(a == b for t, r in zip(tags, reference) for a, b in zip(t, r)) / words
            if reference is not None else 1.0)
    row = {"export": name, "model_mb": model_mb(version_dir), "folder_mb": files_mb(version_dir),
           "vocab": len(tagger.tokenizer), **score(tags, sentences), "same_tags": same,
           "tag_seconds": seconds}
    print(f"{name}: F1 {row['f1']:.4f}, avg F1 {row['avg_f1']:.4f}, {row['model_mb']:.1f} MB, "
          f"{100 * same:.2f} % tags as the SavedModel, {seconds:.0f} s", file=sys.stderr,
          flush=True)
    return row, tags


def markdown(rows: list[dict], run_dir: str, n_sentences: int) -> str:
    base = next(r for r in rows if r["export"] == "savedmodel")
    lines = ["| export | vocab | model MB | folder MB | F1 | avg F1 | Δ avg F1 vs SavedModel "
             "| tags as SavedModel | tagging s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        def mb(key, r=r):
            return f"{r[key]:.1f}" if r.get(key) is not None else "—"

        delta = 100 * (r["avg_f1"] - base["avg_f1"])
        lines.append(
            f"| {r['what']} | {r.get('vocab') or '—'} | {mb('model_mb')} | {mb('folder_mb')} | "
            f"{100 * r['f1']:.2f} | {100 * r['avg_f1']:.2f} | {delta:+.2f} | "
            + (f"{100 * r['same_tags']:.2f} %" if r.get("same_tags") is not None else "—")
            + " | " + (f"{r['tag_seconds']:.0f}" if r.get("tag_seconds") else "—") + " |")
    return ("\n".join(lines) + f"\n\nRun `{run_dir}`, {n_sentences} test sentences; F1 in points "
            "(seqeval strict IOB2, micro over entities; avg F1: mean of the per-language F1); "
            f"MB = 10^6 bytes. CPU: {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores.\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run_dir", required=True, help="--output_dir of a finished run_distil.py run")
    p.add_argument("--output", required=True, help="writes OUTPUT.md and OUTPUT.csv")
    p.add_argument("--formats", default=",".join(FORMATS),
                   help=f"comma-separated, of {', '.join(FORMATS)} (savedmodel always runs)")
    p.add_argument("--trim", action="store_true",
                   help="also export with the vocabulary trimmed (the SavedModel, and LiteRT "
                   "int8 when it is in --formats)")
    p.add_argument("--trim_text", default="",
                   help="with --trim: also keep the sub-words of these unlabelled files")
    p.add_argument("--test_file", default="", help="test files (default: the run's)")
    p.add_argument("--batch_size", type=int, default=64)
    startup.add_verbosity_argument(p)
    args = p.parse_args(argv)
    if args.trim_text and not args.trim:
        p.error("--trim_text adds text to --trim's: give --trim too")
    formats = ["savedmodel"] + [f for f in args.formats.split(",") if f and f != "savedmodel"]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        p.error(f"--formats: unknown {bad}; use {', '.join(FORMATS)}")
    try:
        cfg, model, labels, tokenizer = export.rebuild(args.run_dir)
    except ValueError as e:
        p.error(str(e))
    test_files = args.test_file or ",".join(cfg.data.test_files)
    sentences, _ = labels_lib.convert_sentences(data_lib.read_labelled_files(test_files),
                                                cfg.data.tag_scheme, test_files)
    with open(os.path.join(args.run_dir, "metrics.json"), encoding="utf-8") as f:
        student = json.load(f)["student"]
    rows = [{"export": "run", "what": "the run's model in memory (metrics.json)",
             "f1": student["f1"], "vocab": None,
             "avg_f1": language_average(student.get("per_language", {}), student["f1"])}]
    variants = [(f, f, False) for f in formats]
    if args.trim:
        variants += [(f"{f}_trimmed", f, True) for f in ("savedmodel", "litert_int8")
                     if f in formats]
    tmp = tempfile.mkdtemp(prefix="exports-")
    reference = None
    try:
        trimmed = None
        for name, fmt, trim in variants:
            m, tok = model, tokenizer
            if trim:
                if trimmed is None:
                    trimmed = export.trimmed(cfg, model, tokenizer, args.trim_text)
                m, tok = trimmed
            folder = export.export_formats(m, labels, tok, tmp, name, (fmt,), 1,
                                           **({"max_seq_length": cfg.data.max_seq_length}
                                              if fmt == "savedmodel" else {}))[fmt]
            row, tags = evaluate_export(name, folder, sentences, reference,
                                        cfg.data.max_seq_length, args.batch_size)
            row["what"] = WHAT[fmt] + (", trimmed vocabulary" if trim else "") + (
                " (+ --trim_text)" if trim and args.trim_text else "")
            reference = tags if reference is None else reference
            rows.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    table = markdown(rows, args.run_dir, len(sentences))
    with open(args.output + ".md", "w", encoding="utf-8") as f:
        f.write(table)
    columns = ["export", "what", "vocab", "model_mb", "folder_mb", "f1", "avg_f1", "same_tags",
               "tag_seconds"]
    with open(args.output + ".csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
