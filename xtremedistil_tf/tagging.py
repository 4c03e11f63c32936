"""Models at work on sentences: tokenized splits, a tagger, and the teacher's word targets.

A `Split` is sentences tokenized for one model (`features.Window`s); a `Tagger` is a model with
its tokenizer and one compiled word-level forward pass, which predicts, scores and produces the
teacher outputs students learn from (`teacher_targets`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from xtremedistil_tf import (
    config as config_lib,
    data as data_lib,
    evaluate,
    features,
    inference,
    teacher_labels as teacher_labels_lib,
)


@dataclasses.dataclass
class Split:
    """Sentences of one split tokenized for one model."""

    sentences: list[data_lib.Sentence]
    windows: list[features.Window]

    @property
    def lengths(self) -> list[int]:
        return [len(s.words) for s in self.sentences]


def teacher_label_ids(teacher_labels: list[str], labels: list[str]) -> dict[str, int]:
    """Data label -> the id the teacher learns it as: its own index, or for a ready teacher
    with other label names, the index of the teacher label that feeds it
    (`teacher_labels.map_teacher_labels`: B-PER and I-PER both become an IO teacher's PER)."""
    if teacher_labels == labels:
        return {label: i for i, label in enumerate(labels)}
    mapping = teacher_labels_lib.map_teacher_labels(teacher_labels, labels)
    return {label: int(k) for label, k in zip(labels, mapping, strict=True)}


def tokenize(sentences, tokenizer, label_ids, cfg: config_lib.DataConfig) -> Split:
    return Split(sentences, features.make_windows(
        sentences, tokenizer, label_ids, cfg.max_seq_length))


class Tagger:
    """A model with its tokenizer and a compiled word-level forward pass."""

    def __init__(self, model, tokenizer, cfg: config_lib.DataConfig, labels, convert=None,
                 hidden_layers=(), xla=False, with_aux=False):
        self.model = model
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.labels = labels
        self.convert = convert  # teacher label space -> data label space (ready teachers)
        self.forward = inference.make_forward(model, hidden_layers, xla, with_aux=with_aux)

    def batches(self, split: Split, word_targets=None):
        return features.make_batches(split.windows, self.cfg.eval_batch_size,
                                     self.cfg.max_seq_length, self.tokenizer.pad_token_id,
                                     word_targets)

    def outputs(self, split: Split) -> dict[str, list[np.ndarray]]:
        return inference.sentence_outputs(self.forward, split.windows, self.batches(split),
                                          split.lengths)

    def probabilities(self, logits: list[np.ndarray]) -> list[np.ndarray]:
        probs = [inference.softmax(x) for x in logits]
        return [self.convert(p) for p in probs] if self.convert else probs

    def predict(self, split: Split) -> list[list[str]]:
        out = self.outputs(split)
        if self.convert:  # a ready teacher's own labels, mapped to the data's
            ids = [p.argmax(axis=-1) for p in self.probabilities(out["logits"])]
        else:
            ids = out["label_ids"]
        return [[self.labels[i] for i in row] for row in ids]

    def score(self, split: Split) -> dict:
        gold = [list(s.tags) for s in split.sentences]
        langs = [s.lang for s in split.sentences]
        return evaluate.score_tags(gold, self.predict(split), langs)


def teacher_targets(tagger: Tagger, split: Split) -> dict[str, list[np.ndarray]]:
    """Per-sentence word-level teacher outputs: `teacher_logits` [n, K], `teacher_hidden`
    [n, layers, H] and `teacher_aux_logits` [n, n_aux, K] (per-layer classifiers)."""
    out = tagger.outputs(split)
    logits = out["logits"]
    if tagger.convert:  # a ready teacher speaks its own labels: learn its mapped distribution
        logits = [np.log(np.maximum(p, 1e-8)) for p in tagger.probabilities(logits)]
    targets = {"teacher_logits": [x.astype(np.float32) for x in logits]}
    if "hidden" in out:  # float16 halves the cache; losses compute in float32
        targets["teacher_hidden"] = [h.astype(np.float16) for h in out["hidden"]]
    if "aux_logits" in out:
        targets["teacher_aux_logits"] = [x.astype(np.float32) for x in out["aux_logits"]]
    return targets


def window_targets(targets: dict, windows: list[features.Window]) -> dict:
    """Slices per-sentence word targets into the student's windows."""
    return {k: [v[w.sentence][w.word_start:w.word_end] for w in windows]
            for k, v in targets.items()}
