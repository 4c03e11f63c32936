"""Builds the tiny random-weight model folders the tests and flags/smoke.cfg use.

    python scripts/make_test_models.py [--out tests/fixtures/models]

Writes, deterministically (seeded), three Hugging Face folders with the hub's file layout:
    tiny_bert/      BERT encoder (2 blocks, width 32), `tf_model.h5` + fast tokenizer
    tiny_bert_pt/   the same weights as a PyTorch-format `model.safetensors` (the format of most
                    hub checkpoints, loaded into TF by transformers without torch)
    tiny_bert_ner/  a ready token classifier with its own IO labels LOC ORG PER O, like
                    jplu/tf-xlm-r-ner-40-lang, as `tf_model.h5`
The vocabulary covers the words of tests/fixtures/*.conll plus single characters, so every word
tokenizes without [UNK] and longer words split into several sub-words.
"""

import argparse
import glob
import os
import string
import sys

import xtremedistil_tf  # noqa: F401  (TF_USE_LEGACY_KERAS)
from xtremedistil_tf import startup

if __name__ == "__main__":  # TensorFlow's start-up lines stay out of the output
    startup.quiet_tensorflow(startup.verbosity_from_argv(sys.argv[1:]))

import tensorflow as tf
import transformers
from safetensors.numpy import save_file

from xtremedistil_tf.export_hf import pytorch_state_dict

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def vocabulary(max_words: int = 80) -> list[str]:
    """Special tokens, frequent fixture words (lower-cased), characters and ##characters."""
    counts: dict[str, int] = {}
    for path in sorted(glob.glob(os.path.join(FIXTURES, "tiny_*.conll"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if parts and parts[0] != "-DOCSTART-":
                    word = parts[0].lower()
                    counts[word] = counts.get(word, 0) + 1
    words = sorted(counts, key=lambda w: (-counts[w], w))
    words = [w for w in words if len(w) > 1][:max_words]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation) + ["ä", "ö", "ü"]
    return SPECIAL + chars + ["##" + c for c in string.ascii_lowercase + "äöü"] + words


def config(vocab_size: int, **kwargs) -> transformers.BertConfig:
    return transformers.BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, **kwargs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(FIXTURES, "models"))
    startup.add_verbosity_argument(parser)
    out = parser.parse_args().out
    tf.keras.utils.set_random_seed(0)
    vocab = vocabulary()
    os.makedirs(out, exist_ok=True)
    vocab_file = os.path.join(out, "vocab.txt")
    with open(vocab_file, "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=vocab_file, do_lower_case=True)
    os.remove(vocab_file)
    ids = tf.constant([[2, 10, 11, 3]])

    encoder = transformers.TFBertModel(config(len(vocab)))
    encoder(ids)
    for folder in ("tiny_bert", "tiny_bert_pt"):
        tokenizer.save_pretrained(os.path.join(out, folder))
    encoder.save_pretrained(os.path.join(out, "tiny_bert"), safe_serialization=False)
    encoder.config.save_pretrained(os.path.join(out, "tiny_bert_pt"))
    save_file(pytorch_state_dict(encoder), os.path.join(out, "tiny_bert_pt", "model.safetensors"),
              metadata={"format": "pt"})

    labels = ["LOC", "ORG", "PER", "O"]
    ner = transformers.TFBertForTokenClassification(config(
        len(vocab), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        architectures=["BertForTokenClassification"]))
    ner(ids)
    ner.save_pretrained(os.path.join(out, "tiny_bert_ner"), safe_serialization=False)
    tokenizer.save_pretrained(os.path.join(out, "tiny_bert_ner"))
    print(f"wrote {out}: vocabulary {len(vocab)}")


if __name__ == "__main__":
    main()
