"""The teacher's outputs that students learn from, computed once and cached on disk.

`in_memory_targets` serves sets that fit in memory (zero-shot target text; MSD pairs each of its
batches with source batches), `streamed_targets` the transfer set, whose chunks feed training a
few at a time (`teacher_cache.TeacherCache`). Both keep what they computed under a folder, so a
crash after hours of teacher inference loses at most one chunk. `cache_key` names what those
outputs depend on, so that runs sharing a `--teacher_cache_dir` reuse each other's.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from xtremedistil_tf import features, inference, teacher_cache
from xtremedistil_tf.tagging import Split, Tagger, teacher_targets, tokenize, window_targets
from xtremedistil_tf.report import log


def cache_key(tagger: Tagger, sentences, dcfg) -> str:
    """A hash of everything the teacher's cached outputs on `sentences` depend on: the model's
    weights (values and shapes, in order), its fast tokenizer's whole definition,
    `max_seq_length` (windowing), the data's labels and whether a ready
    teacher's labels are mapped onto them, and the sentences themselves (words and language);
    a model computing in mixed precision (`--mixed_precision`) adds its compute dtype.
    Which outputs are cached (logits, hidden layers, per-layer classifiers) is in the folder
    name beside it."""
    h = hashlib.sha1()
    for v in tagger.model.weights:
        value = np.ascontiguousarray(v.numpy())
        h.update(f"{value.dtype}{value.shape}".encode())
        h.update(value.tobytes())
    if tagger.model.compute_dtype != "float32":  # --mixed_precision: other outputs
        h.update(tagger.model.compute_dtype.encode())
    h.update(tagger.tokenizer.backend_tokenizer.to_str().encode())  # `load_tokenizer`: fast
    h.update(json.dumps([type(tagger.tokenizer).__name__, dcfg.max_seq_length,
                         list(tagger.labels), tagger.convert is not None]).encode())
    for s in sentences:
        h.update((f"{s.lang or ''}\x1e" + "\x1f".join(s.words) + "\x1d").encode())
    return h.hexdigest()[:16]


def cached_teacher_targets(tagger: Tagger, sentences, dcfg, folder: str | None,
                           chunk: int = teacher_cache.CACHE_CHUNK) -> dict[str, list[np.ndarray]]:
    """`teacher_targets` of `sentences`, all in memory, computed chunk by chunk and kept under
    `folder` (see `teacher_cache.TeacherCache`): a crash after hours of teacher inference loses
    at most one chunk. Large sets stream instead (`streamed_targets`)."""
    if not folder:
        return teacher_targets(tagger, tokenize(sentences, tagger.tokenizer, None, dcfg))
    return teacher_cache.TeacherCache.build(teacher_compute(tagger, dcfg), sentences, folder,
                                            chunk).load_all()


def teacher_compute(tagger: Tagger, dcfg):
    def compute(part):
        return teacher_targets(tagger, tokenize(part, tagger.tokenizer, None, dcfg))
    return compute


def in_memory_targets(tagger: Tagger, sentences, s_tok, dcfg, folder: str | None = None
                      ) -> tuple[Split, dict]:
    """The student's split of unlabelled `sentences` and the teacher's word targets for it,
    in memory (kept in chunks under `folder`, see `cached_teacher_targets`)."""
    s_split = tokenize(sentences, s_tok, None, dcfg)
    targets = cached_teacher_targets(tagger, sentences, dcfg, folder)
    return s_split, window_targets(targets, s_split.windows)


def streamed_targets(tagger: Tagger, sentences, s_tok, dcfg, folder: str
                     ) -> tuple[Split, teacher_cache.TeacherCache]:
    """The student's split of the transfer sentences and the teacher's targets on disk,
    streamed into training a few chunks at a time (memory does not grow with the set)."""
    s_split = tokenize(sentences, s_tok, None, dcfg)
    cache = teacher_cache.TeacherCache.build(teacher_compute(tagger, dcfg), sentences, folder,
                                             log=log)
    return s_split, cache


def sentence_cls(model, split: Split, tokenizer, dcfg) -> list[np.ndarray]:
    """The model's last-layer [CLS] vector of each sentence (of its first window), float32."""
    batches = features.make_batches(split.windows, dcfg.eval_batch_size, dcfg.max_seq_length,
                                    tokenizer.pad_token_id)
    cls = inference.make_cls(model)
    per_sentence: list = [None] * len(split.sentences)
    for batch in batches:
        vectors = cls(batch["input_ids"], batch["attention_mask"]).numpy()
        for row, w in enumerate(batch["window"]):
            sentence = split.windows[w].sentence
            if per_sentence[sentence] is None or split.windows[w].word_start == 0:
                per_sentence[sentence] = vectors[row]
    return per_sentence


def add_source_batches(batches, source: Split, cls: list, dcfg, pad_id: int, seed: int):
    """MSD: adds `src_input_ids`, `src_attention_mask` and the teacher's `teacher_src_cls` of a
    (cycled, shuffled) source batch to every target batch, for the two MMD losses."""
    src = features.make_batches(source.windows, dcfg.batch_size, dcfg.max_seq_length, pad_id,
                                shuffle=True, seed=seed + 1)
    for i, batch in enumerate(batches):
        other = src[i % len(src)]
        batch["src_input_ids"] = other["input_ids"]
        batch["src_attention_mask"] = other["attention_mask"]
        batch["teacher_src_cls"] = np.stack(
            [cls[source.windows[w].sentence] for w in other["window"]]).astype(np.float32)
