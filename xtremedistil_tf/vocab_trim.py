"""Vocabulary trimming: keep only the sub-words a model's text uses (`--trim_vocab`).

A student that reads a multilingual teacher's tokenizer carries its whole word-embedding table:
250k rows x 256 = 64M of the ~70M parameters of an xtremedistil-l6-h256 student on XLM-R's
vocabulary are embeddings. Most rows are never used by the training and transfer text of one
task. `trim` keeps the rows of the sub-words that occur there (plus special and added tokens),
renumbers them 0..n-1 in their old order, and rewrites the fast tokenizer (`tokenizer.json`:
WordPiece or Unigram model, added tokens, post-processor) to the new ids.

Text whose sub-words were all kept is tokenized into the same pieces (WordPiece's greedy longest
match and Unigram's best segmentation only lose alternatives they did not choose), so the
trimmed model tags it exactly as the untrimmed one. Other words lose the missing pieces:
WordPiece falls back to shorter pieces or [UNK], Unigram to other pieces or <unk>.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence

import numpy as np

from xtremedistil_tf import features

MODELS = ("WordPiece", "Unigram")


def covered_ids(tokenizer, sentences: Iterable) -> list[int]:
    """Sorted ids of every sub-word of `sentences` (`data.Sentence`s), special and added tokens.

    Words are tokenized by the data pipeline's own `features.word_pieces`, so the set is the
    one the model saw in training.
    """
    keep = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    if tokenizer.unk_token_id is not None:
        keep.add(tokenizer.unk_token_id)
    for per_word in features.word_pieces(tokenizer, [s for s in sentences if len(s.words)]):
        for ids in per_word:
            keep.update(ids)
    return sorted(int(i) for i in keep)


def _remap_processor(node, old_to_new: dict[int, int]):
    """Post-processor JSON with its token ids renumbered (Bert/Roberta/Template/Sequence)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in ("sep", "cls") and isinstance(v, list) and len(v) == 2:
                out[k] = [v[0], old_to_new[int(v[1])]]
            elif k == "ids" and isinstance(v, list):
                out[k] = [old_to_new[int(i)] for i in v]
            else:
                out[k] = _remap_processor(v, old_to_new)
        return out
    if isinstance(node, list):
        return [_remap_processor(v, old_to_new) for v in node]
    return node


def trimmed_tokenizer_json(doc: dict, keep: Sequence[int]) -> dict:
    """A `tokenizer.json` document restricted to the ids `keep` (sorted), renumbered 0..n-1.

    Raises:
        ValueError: a tokenizer model other than WordPiece or Unigram (BPE merges would refer
            to removed tokens).
    """
    model = doc["model"]
    kind = model.get("type")
    if kind not in MODELS:
        raise ValueError(f"--trim_vocab: a {kind} tokenizer cannot be trimmed (only "
                         f"{' and '.join(MODELS)}); drop --trim_vocab")
    old_to_new = {old: new for new, old in enumerate(keep)}
    doc = json.loads(json.dumps(doc))
    if kind == "WordPiece":
        by_id = {i: token for token, i in model["vocab"].items()}
        doc["model"]["vocab"] = {by_id[old]: new for new, old in enumerate(keep) if old in by_id}
    else:
        vocab = model["vocab"]
        doc["model"]["vocab"] = [vocab[old] for old in keep if old < len(vocab)]
        if model.get("unk_id") is not None:
            doc["model"]["unk_id"] = old_to_new[model["unk_id"]]
    doc["added_tokens"] = [dict(t, id=old_to_new[t["id"]]) for t in doc.get("added_tokens") or []
                           if t["id"] in old_to_new]
    if doc.get("post_processor"):
        doc["post_processor"] = _remap_processor(doc["post_processor"], old_to_new)
    return doc


def trim_tokenizer(tokenizer, keep: Sequence[int]):
    """The same kind of fast tokenizer with only the ids `keep` (renumbered 0..n-1).

    Saved and reloaded through a temporary folder so that every setting (lower-casing,
    special tokens, class) is the original's; the slow tokenizer's files (vocab.txt,
    sentencepiece.bpe.model) are dropped since they would disagree with the new ids.
    """
    import transformers

    old_to_new = {old: new for new, old in enumerate(keep)}
    doc = trimmed_tokenizer_json(json.loads(tokenizer.backend_tokenizer.to_str()), keep)
    folder = tempfile.mkdtemp(prefix="trim-")
    try:
        tokenizer.save_pretrained(folder)
        for name in os.listdir(folder):
            if name not in ("tokenizer.json", "tokenizer_config.json",
                            "special_tokens_map.json"):
                os.remove(os.path.join(folder, name))
        with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False)
        config_path = os.path.join(folder, "tokenizer_config.json")
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        config.pop("vocab_file", None)
        if "added_tokens_decoder" in config:
            config["added_tokens_decoder"] = {
                str(old_to_new[int(i)]): v for i, v in config["added_tokens_decoder"].items()
                if int(i) in old_to_new}
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False)
        return transformers.AutoTokenizer.from_pretrained(folder, use_fast=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def trim_model(model, keep: Sequence[int], old_to_new_ids: dict[str, int] | None = None):
    """A copy of a `models.TokenClassifier` whose word embeddings hold only the rows `keep`.

    The copy is for tagging: the distillation projection and per-layer classifiers are left
    out. `old_to_new_ids` maps config fields (pad_token_id, ...) to their new ids.
    """
    from xtremedistil_tf import models

    encoder = models.with_vocab(model.encoder, len(keep), old_to_new_ids or {})
    table = model.encoder.embeddings.weight.numpy()
    encoder.embeddings.weight.assign(table[np.asarray(keep)])
    special = [i for i in model.special_ids]
    remap = {old: new for new, old in enumerate(keep)}
    trimmed = models.TokenClassifier(
        encoder, model.num_labels, model.dropout_rate, head=model.head_kind,
        labels=model.head.labels, special_ids=[remap[i] for i in special if i in remap],
        name=model.name).build_with_dummy()
    trimmed.head.set_weights(model.head.get_weights())
    return trimmed


def trim(model, tokenizer, keep: Sequence[int]):
    """(trimmed model, trimmed tokenizer, info) for the sub-word ids `keep` (see module doc).

    `info` holds `vocab`, `params` and `embedding_params`, each as [before, after].
    """
    from xtremedistil_tf import models

    rows = model.encoder.embeddings.weight.shape[0]
    keep = sorted(int(i) for i in set(keep) if 0 <= int(i) < rows)
    new_tokenizer = trim_tokenizer(tokenizer, keep)
    remap = {old: new for new, old in enumerate(keep)}
    ids = {}
    for field in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id"):
        old = getattr(model.encoder.config, field, None)
        if old is not None and old in remap:
            ids[field] = remap[old]
    trimmed = trim_model(model, keep, ids)
    info = {"vocab": [int(rows), len(keep)],
            "params": [models.count_params(model), models.count_params(trimmed)],
            "embedding_params": [models.embedding_params(model),
                                 models.embedding_params(trimmed)]}
    return trimmed, new_tokenizer, info


def trim_to_text(model, tokenizer, sentences: Iterable):
    """`trim` to the sub-words of `sentences` (`covered_ids`); returns (model, tokenizer, info)
    and says on stderr what it kept."""
    model, tokenizer, info = trim(model, tokenizer, covered_ids(tokenizer, sentences))
    print(f"vocabulary trimmed to its text's sub-words: {info['vocab'][0]} -> "
          f"{info['vocab'][1]} sub-words, {info['params'][0]} -> {info['params'][1]} parameters",
          file=sys.stderr, flush=True)
    return model, tokenizer, info
