"""Sub-word alignment, windowing and length-bucketed batches.

A sentence becomes one or more *windows* of whole words whose sub-words (plus the two special
tokens) fit in `max_seq_length`. Each window records the position of every word's first sub-word
(`word_index`), so models can be compared and scored per word, and predictions of the windows of
a sentence are merged back so that every input word gets exactly one prediction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from xtremedistil_tf import data as data_lib

IGNORE = -1  # label id of positions that carry no label (padding, non-first sub-words, unlabelled)
# Padded lengths: steps of 16 up to 128 (where most sentences are, so little padding is
# computed), then coarser.
BUCKETS = (16, 32, 48, 64, 80, 96, 112, 128, 192, 256, 384, 512, 768, 1024, 2048, 4096)


@dataclasses.dataclass(frozen=True)
class Window:
    """One model input: a run of whole words of one sentence.

    Attributes:
        sentence: index of the sentence in the list it came from.
        word_start, word_end: the words `[word_start, word_end)` of that sentence.
        input_ids: [T] sub-word ids with special tokens.
        word_index: [W] position in `input_ids` of each word's first sub-word.
        token_labels: [T] label id per sub-word: the word's tag on its first sub-word, the
            matching `I-` tag on the others (IGNORE on special tokens and when unlabelled);
            losses choose which positions count.
        word_labels: [W] label id per word (IGNORE when unlabelled).
    """

    sentence: int
    word_start: int
    word_end: int
    input_ids: np.ndarray
    word_index: np.ndarray
    token_labels: np.ndarray
    word_labels: np.ndarray


def word_pieces(tokenizer, sentences: Sequence[data_lib.Sentence]) -> Iterator[list[list[int]]]:
    """Yields, per sentence, each word's sub-word ids (never empty), tokenized 1,000 at a time."""
    words = [list(s.words) for s in sentences]
    for start in range(0, len(words), 1000):
        chunk = words[start : start + 1000]
        # verbose=False: long sentences are cut into windows by `make_windows`, so transformers'
        # warning about sequences over the model's maximum length ("indexing errors") does not
        # apply.
        enc = tokenizer(chunk, is_split_into_words=True, add_special_tokens=False,
                        verbose=False)
        for i, sent in enumerate(chunk):
            ids = enc["input_ids"][i]
            per_word: list[list[int]] = [[] for _ in sent]
            for pos, w in enumerate(enc.word_ids(i)):
                if w is not None:
                    per_word[w].append(ids[pos])
            # A word the tokenizer turns into nothing (control characters, zero-width spaces)
            # becomes the unknown token: it must still get a prediction.
            for p in per_word:
                if not p:
                    p.append(tokenizer.unk_token_id)
            yield per_word


def make_windows(
    sentences: Sequence[data_lib.Sentence],
    tokenizer,
    label_ids: dict[str, int] | None,
    max_seq_length: int,
) -> list[Window]:
    """Tokenizes sentences and splits them into windows that fit `max_seq_length`.

    Args:
        sentences: the sentences; tags are used when present and `label_ids` is given.
        tokenizer: a Hugging Face fast tokenizer with `cls_token_id` and `sep_token_id`.
        label_ids: tag -> id, or None to ignore tags.
        max_seq_length: sub-words per window including the two special tokens.

    Returns:
        Windows in sentence order; every word of every sentence is in exactly one window.

    Raises:
        data.DataError: a single word has more sub-words than a window can hold.
    """
    budget = max_seq_length - 2
    windows = []
    for s_idx, (sent, per_word) in enumerate(zip(sentences, word_pieces(tokenizer, sentences))):
        tags = sent.tags if (label_ids is not None and sent.tags is not None) else None
        for w, p in enumerate(per_word):
            if len(p) > budget:
                raise data_lib.DataError(
                    sent.source or f"sentence {s_idx + 1}",
                    f"word {sent.words[w]!r} has {len(p)} sub-words but "
                    f"--max_seq_length={max_seq_length} leaves room for {budget}",
                    "raise --max_seq_length",
                )
        start = 0
        while start < len(per_word) or (start == 0 and not per_word):
            end, used = start, 0
            while end < len(per_word) and used + len(per_word[end]) <= budget:
                used += len(per_word[end])
                end += 1
            windows.append(_window(s_idx, start, end, per_word, tags, label_ids, tokenizer))
            if end == start:  # empty sentence
                break
            start = end
    return windows


def _window(s_idx, start, end, per_word, tags, label_ids, tokenizer):
    ids = [tokenizer.cls_token_id]
    word_index, token_labels, word_labels = [], [IGNORE], []
    for w in range(start, end):
        word_index.append(len(ids))
        ids.extend(per_word[w])
        if tags is None:
            word_labels.append(IGNORE)
            token_labels.extend([IGNORE] * len(per_word[w]))
            continue
        tag = tags[w]
        word_labels.append(label_ids[tag])
        token_labels.append(label_ids[tag])
        rest = label_ids[tag]
        if tag.startswith("B-"):  # continuation pieces of an entity's first word are inside it
            rest = label_ids.get("I-" + tag[2:], rest)
        token_labels.extend([rest] * (len(per_word[w]) - 1))
    ids.append(tokenizer.sep_token_id)
    token_labels.append(IGNORE)
    return Window(
        sentence=s_idx,
        word_start=start,
        word_end=end,
        input_ids=np.asarray(ids, np.int32),
        word_index=np.asarray(word_index, np.int32),
        token_labels=np.asarray(token_labels, np.int32),
        word_labels=np.asarray(word_labels, np.int32),
    )


def bucket_lengths(max_seq_length: int) -> tuple[int, ...]:
    """Padded lengths used for batches: `BUCKETS` below max_seq_length, then max_seq_length."""
    return tuple(b for b in BUCKETS if b < max_seq_length) + (max_seq_length,)


def make_batches(
    windows: Sequence[Window],
    batch_size: int,
    max_seq_length: int,
    pad_id: int,
    word_targets: dict[str, Sequence[np.ndarray]] | None = None,
    shuffle: bool = False,
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """Groups windows of similar length into padded numpy batches.

    Windows go to the smallest bucket length that holds them; every batch of a bucket has the same
    padded length `T` (so a `tf.function` sees few shapes), and word arrays are padded to `T` too.

    Args:
        windows: the windows.
        batch_size: windows per batch.
        max_seq_length: the largest bucket.
        pad_id: the tokenizer's padding id.
        word_targets: optional per-window arrays with the word axis first (`[W, ...]`), e.g. cached
            teacher outputs; each becomes a `[B, T, ...]` batch entry under its key.
        shuffle: shuffle windows within buckets and the order of batches (seeded).
        seed: the shuffle seed (use a different one per epoch).

    Returns:
        Batches with `input_ids`, `attention_mask` [B,T] int32, `word_index` [B,T] int32,
        `word_mask` [B,T] float32, `token_first` [B,T] float32 (1 at first sub-words),
        `token_labels` and `word_labels` [B,T] int32 (IGNORE padded),
        `window` [B] int32 (index into `windows`) and the `word_targets` keys.
    """
    rng = np.random.default_rng(seed)
    groups = batch_groups(windows, range(len(windows)), batch_size, max_seq_length, rng, shuffle)
    return [pad_batch(windows, idx, t, pad_id, word_targets) for t, idx in groups]


def batch_groups(windows: Sequence[Window], members, batch_size: int, max_seq_length: int,
                 rng: np.random.Generator, shuffle: bool) -> list[tuple[int, list[int]]]:
    """Splits the windows `members` (indices into `windows`) into batches of one bucket each.

    Returns `(padded length, window indices)` per batch: by bucket then position unless
    `shuffle`, which shuffles windows within each bucket and then the batches (with `rng`).
    """
    lengths = bucket_lengths(max_seq_length)
    by_bucket: dict[int, list[int]] = {}
    for i in members:
        b = next(b for b in lengths if len(windows[i].input_ids) <= b)
        by_bucket.setdefault(b, []).append(int(i))
    groups = []
    for b, idx in sorted(by_bucket.items()):
        idx = [int(i) for i in rng.permutation(idx)] if shuffle else idx
        groups.extend((b, idx[k : k + batch_size]) for k in range(0, len(idx), batch_size))
    if shuffle:
        groups = [groups[k] for k in rng.permutation(len(groups))]
    return groups


def pad_batch(windows: Sequence[Window], idx: Sequence[int], t: int, pad_id: int,
              word_targets=None) -> dict[str, np.ndarray]:
    """One batch of the windows `idx` padded to length `t` (see `make_batches` for the keys);
    `word_targets` maps a key to anything indexable by window index giving `[W, ...]`; float16
    targets (cached teacher hidden states) come out as float32: oneDNN has no float16 kernels
    without AVX-512, and says so on stderr when the step gets one."""
    n = len(idx)
    batch = {
        "input_ids": np.full((n, t), pad_id, np.int32),
        "attention_mask": np.zeros((n, t), np.int32),
        "word_index": np.zeros((n, t), np.int32),
        "word_mask": np.zeros((n, t), np.float32),
        "token_first": np.zeros((n, t), np.float32),
        "token_labels": np.full((n, t), IGNORE, np.int32),
        "word_labels": np.full((n, t), IGNORE, np.int32),
        "window": np.asarray(idx, np.int32),
    }
    for key, arrays in (word_targets or {}).items():
        first = arrays[idx[0]]
        dtype = np.float32 if first.dtype == np.float16 else first.dtype
        batch[key] = np.zeros((n, t) + first.shape[1:], dtype)
    for row, i in enumerate(idx):
        w = windows[i]
        ln, nw = len(w.input_ids), len(w.word_index)
        batch["input_ids"][row, :ln] = w.input_ids
        batch["attention_mask"][row, :ln] = 1
        batch["token_labels"][row, :ln] = w.token_labels
        batch["word_index"][row, :nw] = w.word_index
        batch["word_mask"][row, :nw] = 1.0
        batch["token_first"][row, w.word_index] = 1.0
        batch["word_labels"][row, :nw] = w.word_labels
        for key, arrays in (word_targets or {}).items():
            batch[key][row, :nw] = arrays[i]
    return batch


def to_dataset(batches: Sequence[dict[str, np.ndarray]], keys: Sequence[str]):
    """Wraps numpy batches in a prefetching `tf.data.Dataset` of the entries `keys`.

    Batches keep their bucket's padded length; the next batch is prepared while one trains.
    """
    import tensorflow as tf

    first = batches[0]
    signature = {
        k: tf.TensorSpec((None, None) + first[k].shape[2:], tf.as_dtype(first[k].dtype))
        for k in keys
    }
    return tf.data.Dataset.from_generator(
        lambda: ({k: b[k] for k in keys} for b in batches), output_signature=signature
    ).prefetch(2)


def merge_windows(
    windows: Sequence[Window], per_window: Sequence[np.ndarray], n_sentences: int,
    sentence_lengths: Sequence[int],
) -> list[np.ndarray]:
    """Joins per-window word arrays (`[W, ...]`) back into one array per sentence.

    Raises:
        ValueError: a word got no value or two values (a bug, never silently ignored).
    """
    parts: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(n_sentences)]
    for w, arr in zip(windows, per_window):
        parts[w.sentence].append((w.word_start, arr))
    merged = []
    for s, chunks in enumerate(parts):
        chunks.sort(key=lambda c: c[0])
        arr = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros((0,))
        if len(arr) != sentence_lengths[s]:
            raise ValueError(
                f"sentence {s}: {len(arr)} word predictions for {sentence_lengths[s]} words"
            )
        merged.append(arr)
    return merged


def batch_rows(
    batch: dict[str, np.ndarray], values: np.ndarray
) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (window index, `[W, ...]` word values) for each row of a batch's `[B, T, ...]`."""
    counts = batch["word_mask"].sum(axis=1).astype(int)
    for row, w in enumerate(batch["window"]):
        yield int(w), values[row, : counts[row]]
