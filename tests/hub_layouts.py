"""Tiny offline twins of two hub repositories, with exactly their file layouts.

`jplu/tf-xlm-r-ner-40-lang` (the headline teacher) holds

    config.json              architectures XLMRobertaForTokenClassification, IO labels
                             LOC ORG PER O
    sentencepiece.bpe.model  the SentencePiece model (no tokenizer.json: transformers converts
                             it, which needs the `sentencepiece` package)
    special_tokens_map.json
    tokenizer_config.json    {}
    tf_model.h5

and `microsoft/xtremedistil-l6-h256-uncased` (the headline student) holds

    config.json              architectures BertModel
    vocab.txt                uncased WordPiece vocabulary (no tokenizer files at all)
    tf_model.h5

The twins have random weights and tiny shapes (width 32 / 16, 2 blocks); the SentencePiece
model is trained here on the fixture sentences (about a second).
"""

from __future__ import annotations

import glob
import json
import os

XLMR_LABELS = ["LOC", "ORG", "PER", "O"]
SPECIAL_TOKENS_MAP = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                      "sep_token": "</s>", "pad_token": "<pad>", "cls_token": "<s>",
                      "mask_token": "<mask>"}


def fixture_sentences(fixtures: str) -> list[str]:
    """The sentences of every tiny_* fixture file (CoNLL words joined, raw text lines)."""
    text = []
    for path in sorted(glob.glob(os.path.join(fixtures, "tiny_*"))):
        if path.endswith(".txt"):
            with open(path, encoding="utf-8") as f:
                text += [line.strip() for line in f if line.strip()]
            continue
        if not path.endswith(".conll"):
            continue
        words: list[str] = []
        with open(path, encoding="utf-8") as f:
            for line in [*f, ""]:
                parts = line.split()
                if parts and parts[0] != "-DOCSTART-":
                    words.append(parts[0])
                elif words:
                    text.append(" ".join(words))
                    words = []
    return text


def make_xlmr_ner(folder: str, fixtures: str, pieces: int = 160) -> str:
    """Writes the jplu/tf-xlm-r-ner-40-lang twin into `folder` and returns it."""
    import sentencepiece
    import tensorflow as tf
    import transformers

    os.makedirs(folder, exist_ok=True)
    prefix = os.path.join(folder, "sentencepiece.bpe")
    # XLM-R's SentencePiece model: <unk> 0, <s> 1, </s> 2, no <pad> (transformers adds the
    # fairseq ids: <s> 0, <pad> 1, </s> 2, <unk> 3, pieces shifted by one, <mask> last).
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(fixture_sentences(fixtures)), model_prefix=prefix,
        vocab_size=pieces, model_type="unigram", hard_vocab_limit=False,
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2,
        num_threads=1)
    os.remove(prefix + ".vocab")
    size = sentencepiece.SentencePieceProcessor(model_file=prefix + ".model").get_piece_size()
    cfg = transformers.XLMRobertaConfig(
        vocab_size=size + 2, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=130, type_vocab_size=1, pad_token_id=1,
        bos_token_id=0, eos_token_id=2, id2label=dict(enumerate(XLMR_LABELS)),
        label2id={label: i for i, label in enumerate(XLMR_LABELS)},
        architectures=["XLMRobertaForTokenClassification"])
    model = transformers.TFXLMRobertaForTokenClassification(cfg)
    model(tf.constant([[0, 5, 6, 2]]))
    model.save_pretrained(folder, safe_serialization=False)
    with open(os.path.join(folder, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(SPECIAL_TOKENS_MAP, f)
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        f.write("{}")
    return folder


def make_xtremedistil(folder: str, vocab_file: str) -> str:
    """Writes the microsoft/xtremedistil-l6-h256-uncased twin (with `vocab_file`'s WordPiece
    vocabulary) into `folder` and returns it."""
    import tensorflow as tf
    import transformers

    os.makedirs(folder, exist_ok=True)
    with open(vocab_file, encoding="utf-8") as f:
        vocab = [line.rstrip("\n") for line in f if line.strip()]
    cfg = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=512, architectures=["BertModel"])
    model = transformers.TFBertModel(cfg)
    model(tf.constant([[2, 10, 11, 3]]))
    model.save_pretrained(folder, safe_serialization=False)
    with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("".join(token + "\n" for token in vocab))
    return folder
