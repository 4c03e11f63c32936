"""REST client for a tagger served by TF Serving: sentences in, entity spans (JSON) out.

    python scripts/client.py --assets saved_models/default/1 --name default \
        "Angela Merkel visited Paris ." "Another sentence"      # or sentences on stdin
    python scripts/client.py ... --format inputs --host localhost --port 8501

It tokenizes with the tokenizer exported in `<version>/assets/` (so it must match the served
version), calls `POST http://HOST:PORT/v1/models/NAME:predict` on the `serving_default`
signature, and prints one JSON object per sentence:
`{"text": ..., "entities": [{"text", "type", "start", "end", "score", "entity_group", "word"}],
"tags": [...]}` with
character offsets into the sentence. Long sentences are split into windows of whole words of at
most `--max_seq_length` sub-words (as `python -m xtremedistil_tf.predict` does), so every word
gets a tag.

Standalone: needs `transformers` (for the tokenizer) and numpy, not xtremedistil_tf.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.request


def load_assets(model_dir: str):
    """(tokenizer, labels) of an export version folder (or of its `assets/` folder)."""
    import transformers

    assets = os.path.join(model_dir, "assets")
    assets = assets if os.path.isdir(assets) else model_dir
    with open(os.path.join(assets, "labels.txt"), encoding="utf-8") as f:
        labels = [line.rstrip("\n") for line in f if line.strip()]
    return transformers.AutoTokenizer.from_pretrained(assets), labels


def word_offsets(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of the whitespace-separated words of `text`."""
    return [m.span() for m in re.finditer(r"\S+", text)]


def _windows(tokenizer, words: list[str], max_seq_length: int) -> list[tuple[int, int, list]]:
    """Greedy windows of whole words: (first word, end word, per-word sub-word ids)."""
    if not words:
        return [(0, 0, [])]
    enc = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    pieces: list[list[int]] = [[] for _ in words]
    for pos, w in enumerate(enc.word_ids()):
        if w is not None:
            pieces[w].append(enc["input_ids"][pos])
    pieces = [p or [tokenizer.unk_token_id] for p in pieces]  # a word always gets a tag
    budget, out, start = max_seq_length - 2, [], 0
    while start < len(words):
        end, used = start, 0
        while end < len(words) and used + len(pieces[end]) <= budget:
            used, end = used + len(pieces[end]), end + 1
        if end == start:
            raise ValueError(f"word {words[start]!r} has more than {budget} sub-words")
        out.append((start, end, pieces[start:end]))
        start = end
    return out


def build_request(tokenizer, sentences: list[str], max_seq_length: int = 128,
                  fmt: str = "instances") -> tuple[dict, list[dict]]:
    """The predict request body for `sentences`, and the plan to read its response back.

    Args:
        fmt: "instances" (row format) or "inputs" (columnar format); rows are padded to the
            longest window, since both formats need equal shapes within a request.

    Returns:
        (body, plan): `plan[i]` is `{"sentence", "words": (start, end), "first": [positions]}`
        for row i of the request.
    """
    rows, plan = [], []
    for s, sentence in enumerate(sentences):
        for start, end, pieces in _windows(tokenizer, sentence.split(), max_seq_length):
            ids, first = [tokenizer.cls_token_id], []
            for p in pieces:
                first.append(len(ids))
                ids.extend(p)
            ids.append(tokenizer.sep_token_id)
            rows.append(ids)
            plan.append({"sentence": s, "words": (start, end), "first": first})
    width = max(len(r) for r in rows)
    ids = [r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows]
    mask = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
    if fmt == "instances":
        body = {"signature_name": "serving_default",
                "instances": [{"input_ids": i, "attention_mask": m} for i, m in zip(ids, mask)]}
    elif fmt == "inputs":
        body = {"signature_name": "serving_default",
                "inputs": {"input_ids": ids, "attention_mask": mask}}
    else:
        raise ValueError(f"format {fmt!r}: use instances or inputs")
    return body, plan


def entity_spans(text: str, offsets, tags, scores) -> list[dict]:
    """IOB2 word tags -> `{"text", "type", "start", "end", "score"}` (mean word probability),
    plus Hugging Face pipeline's names `entity_group` (= type) and `word` (= text).

    An `I-` tag that does not continue an entity of its type starts one (as seqeval reads it).
    """
    spans, current = [], None
    for i, tag in enumerate([*tags, "O"]):
        kind = tag[2:] if tag[:2] in ("B-", "I-") else None
        if current and not (tag.startswith("I-") and kind == current[0]):
            t, a, b = current
            start, end = offsets[a][0], offsets[b][1]
            score = sum(float(x) for x in scores[a:b + 1]) / (b + 1 - a)
            spans.append({"text": text[start:end], "type": t, "start": start, "end": end,
                          "score": round(score, 4), "entity_group": t,
                          "word": text[start:end]})
            current = None
        if kind and current is None:
            current = [kind, i, i]
        elif kind:
            current[2] = i
    return spans


def parse_response(response: dict, plan: list[dict], labels: list[str],
                   sentences: list[str]) -> list[dict]:
    """Per sentence: `{"text", "entities", "tags", "scores"}` from a predict response.

    Accepts both response shapes: `{"predictions": [{"label_ids", "probabilities"}, ...]}`
    (row format) and `{"outputs": {"label_ids": [...], "probabilities": [...]}}` (columnar).
    """
    if "error" in response:
        raise RuntimeError(f"TF Serving: {response['error']}")
    if "predictions" in response:
        label_ids = [p["label_ids"] for p in response["predictions"]]
        probs = [p["probabilities"] for p in response["predictions"]]
    else:
        label_ids = response["outputs"]["label_ids"]
        probs = response["outputs"]["probabilities"]
    tags = [[""] * len(s.split()) for s in sentences]
    scores = [[0.0] * len(s.split()) for s in sentences]
    for row, p in enumerate(plan):
        start = p["words"][0]
        for k, pos in enumerate(p["first"]):
            label = label_ids[row][pos]
            tags[p["sentence"]][start + k] = labels[label]
            scores[p["sentence"]][start + k] = float(probs[row][pos][label])
    results = []
    for text, t, sc in zip(sentences, tags, scores):
        results.append({"text": text, "entities": entity_spans(text, word_offsets(text), t, sc),
                        "tags": t, "scores": sc})
    return results


def post(url: str, body: dict, timeout: float = 30.0) -> dict:
    """POSTs JSON and returns the decoded JSON answer (TF Serving errors come back as JSON)."""
    request = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        return json.loads(e.read().decode("utf-8") or json.dumps({"error": str(e)}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sentences", nargs="*", help="sentences (default: one per stdin line)")
    parser.add_argument("--assets", required=True,
                        help="the served export version folder (for assets/: tokenizer, labels)")
    parser.add_argument("--name", required=True, help="model name in TF Serving")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--format", default="instances", choices=("instances", "inputs"))
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32, help="sentences per request")
    args = parser.parse_args(argv)
    tokenizer, labels = load_assets(args.assets)
    sentences = args.sentences or [line.rstrip("\n") for line in sys.stdin]
    url = f"http://{args.host}:{args.port}/v1/models/{args.name}:predict"
    try:
        for k in range(0, len(sentences), args.batch):
            chunk = sentences[k:k + args.batch]
            body, plan = build_request(tokenizer, chunk, args.max_seq_length, args.format)
            for result in parse_response(post(url, body), plan, labels, chunk):
                result.pop("scores")
                print(json.dumps(result, ensure_ascii=False))
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
