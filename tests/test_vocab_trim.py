"""--trim_vocab: only the sub-words of the training and transfer text are kept; the trimmed
model and tokenizer tag covered text exactly as the untrimmed ones, and the export shrinks."""

import os

import numpy as np
import pytest
import tensorflow as tf

from xtremedistil_tf import data, predict, savedmodel, vocab_trim
from conftest import MODELS, fixture_path, varied_tagger

LABELS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def sentences():
    return (data.read_labelled_files([fixture_path("tiny_train.conll")])
            + data.read_unlabelled(fixture_path("tiny_unlabelled.txt")))


def logits(model, tok, words):
    enc = tok([words], is_split_into_words=True, return_tensors="np")
    out = model({"input_ids": tf.constant(enc["input_ids"], tf.int32),
                 "attention_mask": tf.constant(enc["attention_mask"], tf.int32)})
    return enc["input_ids"][0], out["logits"].numpy()[0]


def variables_mb(path):
    folder = os.path.join(path, "variables")
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) / 1e6


@pytest.fixture(scope="module", params=["wordpiece", "unigram"])
def case(request, hub_models):
    folder = (os.path.join(MODELS, "tiny_bert") if request.param == "wordpiece"
              else hub_models["xlmr_ner"])
    model, tok = varied_tagger(folder, LABELS)
    keep = vocab_trim.covered_ids(tok, sentences())
    trimmed, trimmed_tok, info = vocab_trim.trim(model, tok, keep)
    return request.param, model, tok, trimmed, trimmed_tok, info, keep


def test_covered_text_gives_the_same_pieces_and_logits(case):
    kind, model, tok, trimmed, trimmed_tok, info, keep = case
    assert type(trimmed_tok) is type(tok)
    assert info["vocab"] == [model.encoder.embeddings.weight.shape[0], len(keep)]
    assert len(trimmed_tok) == len(keep) and trimmed.encoder.config.vocab_size == len(keep)
    for s in sentences():
        words = list(s.words)
        ids, expected = logits(model, tok, words)
        new_ids, got = logits(trimmed, trimmed_tok, words)
        assert tok.convert_ids_to_tokens(ids) == trimmed_tok.convert_ids_to_tokens(new_ids)
        assert [keep[i] for i in new_ids] == list(ids)
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert trimmed_tok.pad_token_id == keep.index(tok.pad_token_id)
    assert trimmed.encoder.config.pad_token_id == keep.index(model.encoder.config.pad_token_id)


def test_uncovered_text_still_gets_valid_ids(case):
    *_, trimmed_tok, info, keep = case
    ids = trimmed_tok("Zyxwvq Überraschung 中文 qqq")["input_ids"]
    assert all(0 <= i < len(keep) for i in ids) and len(ids) > 2


@pytest.mark.parametrize("case", ["unigram"], indirect=True)  # WordPiece: same code path
def test_export_is_smaller_and_predicts_the_same_tags(case, tmp_path):
    kind, model, tok, trimmed, trimmed_tok, info, keep = case
    full = savedmodel.export(model, LABELS, tok, str(tmp_path), "full")
    small = savedmodel.export(trimmed, LABELS, trimmed_tok, str(tmp_path), "small")
    covered = sentences()
    tags = [predict.ExportedTagger(p).tag(covered, 8, 32) for p in (full, small)]
    assert tags[0] == tags[1]
    assert len({t for sentence in tags[0] for t in sentence}) > 2  # not all one tag
    before, after = variables_mb(full), variables_mb(small)
    print(f"\n{kind}: vocabulary {info['vocab'][0]} -> {info['vocab'][1]}, params "
          f"{info['params'][0]} -> {info['params'][1]} (embeddings "
          f"{info['embedding_params'][0]} -> {info['embedding_params'][1]}), SavedModel "
          f"variables {before:.3f} -> {after:.3f} MB")
    assert info["params"][0] - info["params"][1] == (
        info["embedding_params"][0] - info["embedding_params"][1]) > 0
    assert after < before


def test_bpe_tokenizers_are_refused():
    doc = {"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}
    with pytest.raises(ValueError, match="BPE tokenizer cannot be trimmed.*drop --trim_vocab"):
        vocab_trim.trimmed_tokenizer_json(doc, [0])
