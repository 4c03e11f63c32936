"""Checks that tag_text's in-graph tokenizer gives the Hugging Face tokenizer's ids.

    python scripts/check_tag_text_ids.py --tokenizer ../models/multilingual-e5-small \
        --conll ../shared/data/wikiann/de/test.conll,../shared/data/wikiann/ar/test.conll

Every word of the CoNLL files (or of --text lines) is tokenized both ways, the way
`features.make_windows` and the `tag_text` signature do it; prints how many words differ (and
the first few), exits 1 if any does.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import xtremedistil_tf  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from xtremedistil_tf import startup  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokenizer", required=True, help="hub id or folder with tokenizer.json")
    p.add_argument("--conll", default="", help="comma-separated CoNLL files")
    p.add_argument("--text", default="", help="comma-separated files, one sentence per line")
    p.add_argument("--max_words", type=int, default=200000)
    startup.add_verbosity_argument(p)
    args = p.parse_args(argv)
    tf = startup.quiet_tensorflow(args.verbosity)

    from xtremedistil_tf import data, models, serving_text

    tok = models.load_tokenizer(args.tokenizer)
    sentences = [s for f in args.conll.split(",") if f for s in data.read_conll(f)]
    sentences += [s for f in args.text.split(",") if f for s in data.read_unlabelled(f)]
    words = list(dict.fromkeys(w for s in sentences for w in s.words))[: args.max_words]
    graph = serving_text.make_tokenizer(serving_text.tokenizer_settings(tok))
    differ = []
    for start in range(0, len(words), 4096):
        chunk = words[start:start + 4096]
        got = serving_text.word_pieces(graph, tf.constant(chunk), tok.unk_token_id).to_list()
        enc = tok(chunk, is_split_into_words=True, add_special_tokens=False)
        expected = [[] for _ in chunk]
        for pos, w in enumerate(enc.word_ids()):
            expected[w].append(enc["input_ids"][pos])
        expected = [e or [tok.unk_token_id] for e in expected]
        differ += [(w, e, g) for w, e, g in zip(chunk, expected, got) if e != g]
    print(f"{len(words)} distinct words, {len(differ)} with other ids than Hugging Face's")
    for w, e, g in differ[:10]:
        print(f"  {w!r}: HF {e} tag_text {g}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
