"""Times a teacher and the weight-selected student shapes it can give, in one process.

    python scripts/time_student_shapes.py --teacher ../models/multilingual-e5-small \
        --shapes l6-h256,l4-h256,l3-h256,l4-h192 --output results/wikiann_scale/shapes.json

Which preset is the student "at >= 5x the teacher's throughput" depends on the teacher's head
size (a selected student keeps whole heads: an l4-h256 cut from a 12 x 32-head teacher has 8
heads of 32, slower than the 4 heads of 64 of a random-init l4-h256) and on the sequence length
(attention's cost grows with its square). So every shape is timed at the README's batch 32 x 128
and at 32 x 32 (WikiANN sentences are about 20 sub-words), fp32 `tf.function` forward passes,
each model its fastest of --rounds interleaved rounds (this VM's speed drifts by 10-20 % over
minutes; noise only adds time). Weights do not change the cost: the teacher's head is new and
the selection is measured on a dummy batch. Run it on an idle CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import xtremedistil_tf  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", required=True, help="hub id or folder of the teacher")
    p.add_argument("--shapes", default="l6-h256,l4-h256,l3-h256,l4-h192,l2-h384",
                   help="comma-separated presets, cut by weight selection")
    p.add_argument("--lengths", default="128,32", help="sequence lengths timed (batch 32)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--output", default="", help="a JSON file for the timings")
    args = p.parse_args(argv)
    from xtremedistil_tf import models, speed, students

    tok = models.load_tokenizer(args.teacher)
    teacher, _, _ = models.build_teacher(args.teacher, LABELS, 0.1)
    ids = np.full((2, 8), 5, np.int32)
    sample = [{"input_ids": ids, "attention_mask": np.ones_like(ids)}]
    built = {"teacher": teacher}
    for shape in (s for s in args.shapes.split(",") if s):
        built[shape] = students.build_student(
            shape, teacher, len(LABELS), len(tok), tok.pad_token_id, 128, 0.1, False,
            init="select", select_batches=sample)
    lengths = [int(x) for x in args.lengths.split(",")]
    best = {k: r["ms_per_batch"]
            for k, r in speed.fastest_of(built, len(tok), args.rounds, lengths).items()}
    rows = [{"model": name, "params": models.count_params(model),
             **{f"ms_32x{n}": best[name, n] for n in lengths},
             **{f"speedup_32x{n}": best["teacher", n] / best[name, n] for n in lengths}}
            for name, model in built.items()]
    print("| model | " + " | ".join(f"32 x {n}: ms, speed-up" for n in lengths) + " |")
    print("|---|" + "---:|" * len(lengths))
    for r in rows:
        print(f"| {r['model']} | " + " | ".join(
            f"{r[f'ms_32x{n}']:.0f}, {r[f'speedup_32x{n}']:.2f}x" for n in lengths) + " |")
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump({"teacher": args.teacher, "rounds": args.rounds, "rows": rows}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
