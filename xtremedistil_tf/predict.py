"""Tag text with an exported model.

    python -m xtremedistil_tf.predict --model saved_models/default/1 --input text.txt \
        [--output tagged.conll] [--batch_size 64]

The input is raw text (one sentence per line, whitespace tokens) or a CoNLL file (first column
read, tags ignored). The output is `token<TAB>tag` lines with a blank line after each sentence,
in input order: every input word gets exactly one tag. Work is done in chunks of sentences,
batched by length inside a chunk, with a progress bar on stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import xtremedistil_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import numpy as np
from absl import app, flags

from xtremedistil_tf import data as data_lib, export as export_lib, features

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "An exported SavedModel folder (saved_models/<name>/<version>).")
flags.DEFINE_string("input", None, "Raw text (one sentence per line) or CoNLL file.")
flags.DEFINE_string("output", "-", "Output file ('-': stdout).")
flags.DEFINE_integer("batch_size", 64, "Windows per batch.")
flags.DEFINE_integer("max_seq_length", 128, "Sub-words per window (long sentences are split).")
flags.DEFINE_integer("chunk_size", 2048, "Sentences read and tagged at a time.")


class ExportedTagger:
    """An exported model with its labels and tokenizer, read from its `assets/` folder."""

    def __init__(self, model_dir: str):
        import tensorflow as tf
        import transformers

        assets = os.path.join(model_dir, "assets")
        if not os.path.isfile(os.path.join(assets, export_lib.LABELS_FILE)):
            raise ValueError(f"{model_dir}: not an exported model (no assets/labels.txt); give "
                             "a saved_models/<name>/<version> folder")
        with open(os.path.join(assets, export_lib.LABELS_FILE), encoding="utf-8") as f:
            self.labels = [line.rstrip("\n") for line in f if line.strip()]
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(assets)
        self.serve = tf.saved_model.load(model_dir).signatures["serving_default"]

    def tag(self, sentences: Sequence[data_lib.Sentence], batch_size: int,
            max_seq_length: int) -> list[list[str]]:
        """Tags of every word of every sentence (first sub-word's label)."""
        import tensorflow as tf

        windows = features.make_windows(sentences, self.tokenizer, None, max_seq_length)
        batches = features.make_batches(windows, batch_size, max_seq_length,
                                        self.tokenizer.pad_token_id)
        per_window: list = [None] * len(windows)
        for batch in batches:
            out = self.serve(input_ids=tf.constant(batch["input_ids"]),
                             attention_mask=tf.constant(batch["attention_mask"]))
            ids = np.take_along_axis(out["label_ids"].numpy(), batch["word_index"], axis=1)
            for row, arr in features.batch_rows(batch, ids):
                per_window[row] = arr
        merged = features.merge_windows(windows, per_window, len(sentences),
                                        [len(s.words) for s in sentences])
        return [[self.labels[i] for i in ids] for ids in merged]


def format_conll(sentences: Sequence[data_lib.Sentence], tags: Sequence[Sequence[str]]) -> str:
    """`token<TAB>tag` lines, a blank line after each sentence."""
    return "".join(
        "".join(f"{w}\t{t}\n" for w, t in zip(s.words, ts, strict=True)) + "\n"
        for s, ts in zip(sentences, tags, strict=True)
    )


def main(argv):
    from tqdm import tqdm

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name in ("model", "input"):
        if not getattr(FLAGS, name):
            print(f"error: --{name} is required", file=sys.stderr)
            return 2
    try:
        tagger = ExportedTagger(FLAGS.model)
        sentences = data_lib.read_unlabelled(FLAGS.input)
        out = sys.stdout if FLAGS.output == "-" else open(FLAGS.output, "w", encoding="utf-8")
        n_words = 0
        with tqdm(total=len(sentences), unit="sent", file=sys.stderr,
                  disable=None) as bar:
            for start in range(0, len(sentences), FLAGS.chunk_size):
                chunk = sentences[start : start + FLAGS.chunk_size]
                tags = tagger.tag(chunk, FLAGS.batch_size, FLAGS.max_seq_length)
                out.write(format_conll(chunk, tags))
                n_words += sum(len(t) for t in tags)
                bar.update(len(chunk))
        if out is not sys.stdout:
            out.close()
    except (ValueError, OSError) as e:
        print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"tagged {len(sentences)} sentences, {n_words} words", file=sys.stderr)
    return 0


if __name__ == "__main__":
    app.run(main)
