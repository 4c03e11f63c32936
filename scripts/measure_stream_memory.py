"""Peak memory of one training epoch's batches over a large transfer set: streamed from the
on-disk teacher cache vs. built in memory (the way before streaming).

    python scripts/measure_stream_memory.py --data ../shared/data/wikiann \
        --tokenizer ../models/multilingual-e5-small --sentences 50000,200000 --mode both

For each size, in a fresh subprocess (peak RSS is per process): reads that many real train
sentences (all languages), tokenizes them with the teacher's tokenizer, writes a teacher cache
of the real shapes (logits [words, 7] float32, and with --hidden one hidden layer
[words, 1, width] float16, random values: the values do not change the memory) and then builds
every batch of one epoch, as training would, keeping none. Prints one JSON line per run with the
peak RSS before and after the epoch. Model weights and the train step add a constant on top
(see a real run's `peak_rss_mb` in metrics.json).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def child(args) -> None:
    import numpy as np

    import xtremedistil_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
    from xtremedistil_tf import startup

    startup.quiet_tensorflow(args.verbosity)
    from xtremedistil_tf import data, features, models, teacher_cache, train

    sentences = []
    for path in sorted(glob.glob(os.path.join(args.data, "*", "train.conll"))):
        sentences += data.read_unlabelled(path, lang=os.path.basename(os.path.dirname(path)))
    sentences = (sentences * (1 + args.n // len(sentences)))[:args.n]  # repeat if too few
    tok = models.load_tokenizer(args.tokenizer)
    windows = features.make_windows(sentences, tok, None, 128)
    rng = np.random.default_rng(0)

    def compute(part):
        out = {"teacher_logits": [rng.normal(size=(len(s.words), 7)).astype(np.float32)
                                  for s in part]}
        if args.hidden:
            out["teacher_hidden"] = [rng.normal(size=(len(s.words), 1, args.width))
                                     .astype(np.float16) for s in part]
        return out

    keys = ["teacher_logits"] + (["teacher_hidden"] if args.hidden else [])
    with tempfile.TemporaryDirectory(dir=args.tmp) as folder:
        cache = teacher_cache.TeacherCache.build(compute, sentences, folder)
        before = train.peak_rss_mb()
        t0 = time.time()
        if args.mode == "stream":
            batches = cache.batches(windows, keys, 32, 128, tok.pad_token_id, seed=0)
            n = sum(1 for _ in batches)
        else:  # every target in memory, all batches built up front (the old path)
            every = cache.load_all()
            targets = {k: [every[k][w.sentence][w.word_start:w.word_end] for w in windows]
                       for k in keys}
            n = len(features.make_batches(windows, 32, 128, tok.pad_token_id, targets,
                                          shuffle=True, seed=0))
        print(json.dumps({"sentences": args.n, "mode": args.mode, "hidden": args.hidden,
                          "batches": n, "peak_rss_mb_before_epoch": round(before),
                          "peak_rss_mb": round(train.peak_rss_mb()),
                          "epoch_s": round(time.time() - t0, 1)}), flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--sentences", default="50000,200000")
    p.add_argument("--mode", default="both", choices=["both", "stream", "memory"])
    p.add_argument("--width", type=int, default=384)
    p.add_argument("--tmp", default=None, help="where the temporary cache goes")
    p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--hidden", action="store_true", help="also hidden-state targets (stage 1)")
    from xtremedistil_tf import startup

    startup.add_verbosity_argument(p)
    args = p.parse_args()
    if args.child:
        args.n = args.child
        child(args)
        return 0
    modes = ["stream", "memory"] if args.mode == "both" else [args.mode]
    for n in [int(x) for x in args.sentences.split(",")]:
        for mode in modes:
            for hidden in (False, True):
                cmd = [sys.executable, __file__, "--data", args.data, "--tokenizer",
                       args.tokenizer, "--mode", mode, "--width", str(args.width),
                       "--child", str(n)] + (["--hidden"] if hidden else []) + (
                    ["--tmp", args.tmp] if args.tmp else []) + (
                    ["-v", str(args.verbosity)] if args.verbosity is not None else [])
                if subprocess.call(cmd) != 0:
                    print(f"failed: {' '.join(cmd)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
