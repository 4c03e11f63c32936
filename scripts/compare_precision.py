"""float32 vs bfloat16 exports of one run: test F1 and serving speed, measured in one process.

    python scripts/compare_precision.py --run_dir runs/wikiann/runs/cut-l6-h384 \
        --test_file en=data/en/test.conll,de=data/de/test.conll [--which student] \
        [--batch_size 32] [--seq_length 128] [--repeats 10] [--output results/precision.md]

Both SavedModels are written by `python -m xtremedistil_tf.export` code (`export_run`, the second
with `--precision bfloat16`) into a temporary folder and loaded back with `tf.saved_model.load`,
so what is scored and timed is exactly what TF Serving would load:
- F1: every test sentence tagged through `serving_default` (as `xtremedistil_tf.predict` does)
  and scored with seqeval strict IOB2 (`evaluate.score_tags`);
- speed: `serving_default` on a fixed `[batch_size, seq_length]` batch, `--warmup` untimed calls
  first, then the median (and p10/p90) of `--repeats` timed calls, the two models alternating
  call by call so that a busy machine slows both alike.

Prints a markdown table and writes it to `--output` (with a CSV beside it) if given.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import xtremedistil_tf  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from xtremedistil_tf import startup  # noqa: E402

if __name__ == "__main__":  # TensorFlow's start-up lines stay out of the output
    startup.quiet_tensorflow(startup.verbosity_from_argv(sys.argv[1:]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from xtremedistil_tf import data as data_lib, evaluate, export, predict  # noqa: E402

PRECISIONS = export.PRECISIONS


def time_alternating(fns: dict, input_ids, attention_mask, repeats: int, warmup: int) -> dict:
    """{name: milliseconds of each timed call}; the callables take turns on every repetition."""
    for fn in fns.values():
        for _ in range(warmup):
            [t.numpy() for t in fn(input_ids=input_ids, attention_mask=attention_mask).values()]
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            [t.numpy() for t in fn(input_ids=input_ids, attention_mask=attention_mask).values()]
            times[name].append((time.perf_counter() - t0) * 1000)
    return times


def compare(run_dir: str, test_file: str, which: str = "student", batch_size: int = 32,
            seq_length: int = 128, repeats: int = 10, warmup: int = 3,
            max_seq_length: int = 128) -> list[dict]:
    """One row per precision: F1 (overall and per language), ms per batch, tokens/s."""
    sentences = data_lib.read_labelled_files(test_file)
    gold = [s.tags for s in sentences]
    langs = [s.lang for s in sentences]
    rows = []
    with tempfile.TemporaryDirectory(prefix="precision-") as folder:
        taggers = {}
        for precision in PRECISIONS:
            path = export.export_run(run_dir, which, name=precision, export_dir=folder,
                                     precision=precision)
            taggers[precision] = predict.ExportedTagger(path)
        vocab = int(taggers["float32"].tokenizer.vocab_size)
        rng = np.random.default_rng(0)
        ids = tf.constant(rng.integers(5, vocab, (batch_size, seq_length)), tf.int32)
        mask = tf.ones_like(ids)
        times = time_alternating({p: t.serve for p, t in taggers.items()}, ids, mask,
                                 repeats, warmup)
        for precision, tagger in taggers.items():
            scores = evaluate.score_tags(gold, tagger.tag(sentences, batch_size, max_seq_length),
                                         langs)
            ms = statistics.median(times[precision])
            row = {"precision": precision, "f1": scores["f1"], "sentences": len(sentences),
                   "ms_per_batch": ms,
                   "ms_p10": float(np.percentile(times[precision], 10)),
                   "ms_p90": float(np.percentile(times[precision], 90)),
                   "tokens_per_s": batch_size * seq_length / (ms / 1000),
                   "batch_size": batch_size, "seq_length": seq_length}
            for lang, s in sorted(scores.get("per_language", {}).items()):
                row[f"f1_{lang}"] = s["f1"]
            rows.append(row)
    base = rows[0]
    for row in rows:
        row["f1_change_points"] = 100 * (row["f1"] - base["f1"])
        row["speedup"] = base["ms_per_batch"] / row["ms_per_batch"]
    return rows


def markdown(rows: list[dict]) -> str:
    langs = [k for k in rows[0] if k.startswith("f1_") and k != "f1_change_points"]
    head = ["precision", *[k[3:] for k in langs], "F1", "change (points)", "ms / batch (p10-p90)",
            "tokens/s", "speed-up"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        cells = [r["precision"], *[f"{100 * r[k]:.1f}" for k in langs], f"**{100 * r['f1']:.2f}**",
                 f"{r['f1_change_points']:+.2f}",
                 f"{r['ms_per_batch']:.0f} ({r['ms_p10']:.0f}-{r['ms_p90']:.0f})",
                 f"{r['tokens_per_s']:.0f}", f"{r['speedup']:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    r = rows[0]
    lines.append(f"\n{r['sentences']} test sentences; speed: `serving_default` of each SavedModel "
                 f"on batches of {r['batch_size']} x {r['seq_length']} sub-words, median of the "
                 "timed calls, the two models alternating.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run_dir", required=True, help="a finished run_distil.py --output_dir")
    p.add_argument("--test_file", required=True, help="CoNLL file(s), lang=path allowed")
    p.add_argument("--which", default="student", choices=("student", "teacher"))
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--seq_length", type=int, default=128)
    p.add_argument("--max_seq_length", type=int, default=128, help="window for tagging")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--output", help="markdown file to write (a .csv is written beside it)")
    startup.add_verbosity_argument(p)
    args = p.parse_args(argv)
    startup.quiet_tensorflow(args.verbosity)
    import transformers

    transformers.logging.set_verbosity_error()
    try:
        rows = compare(args.run_dir, args.test_file, args.which, args.batch_size,
                       args.seq_length, args.repeats, args.warmup, args.max_seq_length)
    except (ValueError, OSError) as e:
        print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    text = markdown(rows)
    print(text)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
        with open(os.path.splitext(args.output)[0] + ".csv", "w", newline="",
                  encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
