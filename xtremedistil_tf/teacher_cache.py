"""The teacher's outputs on unlabelled text, kept on disk in chunks and streamed into training.

Distillation at scale (hundreds of thousands of transfer sentences, hidden-state targets of
`[words, layers, H]` per sentence) does not fit in memory, and recomputing it after a crash
wastes hours. So the teacher's word-level targets are written chunk by chunk
(`chunk-NNNNN.npz`, `CACHE_CHUNK` sentences each, atomically) as they are computed, reused when a
run resumes, and read back a few chunks at a time:

- `TeacherCache.build` computes the chunks a folder still lacks;
- `TeacherCache.batches` is one epoch of padded training batches in a deterministic, seeded
  order: chunks are visited in a shuffled order, `group` chunks at a time, and the windows of
  a group are bucketed by length and shuffled into batches (so batches mix sentences across
  and within chunks), while at most `group + 1` chunks are in memory. It is a lazy sequence:
  `len()`, indexing and slicing (a stage resumed mid-epoch skips the batches it trained on
  without reading their chunks).
"""

from __future__ import annotations

import collections
import math
import os
from collections.abc import Callable, Sequence

import numpy as np

from xtremedistil_tf import features

CACHE_CHUNK = 4096  # sentences per file of the on-disk teacher cache
GROUP = 2  # chunks whose windows are shuffled together into batches


def chunk_path(folder: str, c: int) -> str:
    """The file of chunk `c` (0-based) of a cache folder."""
    return os.path.join(folder, f"chunk-{c:05d}.npz")


def find_complete(root: str, name: str, outputs: Sequence[str], key: str, n: int,
                  chunk: int = CACHE_CHUNK) -> str | None:
    """A finished cache under `root` of the same text and teacher (`<name>-<outputs>-<key>`)
    that holds at least `outputs` (e.g. `["logits"]` is served by `logits-h6`), or None.

    Only a complete folder qualifies: chunks a run added to an unfinished one would lack the
    outputs its own run needs.
    """
    if not os.path.isdir(root):
        return None
    prefix, suffix = f"{name}-", f"-{key}"
    for entry in sorted(os.listdir(root)):
        if not (entry.startswith(prefix) and entry.endswith(suffix)):
            continue
        has = set(entry[len(prefix):-len(suffix)].split("-"))
        folder = os.path.join(root, entry)
        if set(outputs) <= has and all(os.path.exists(chunk_path(folder, c))
                                       for c in range(math.ceil(n / chunk))):
            return folder
    return None


class TeacherCache:
    """Word-level teacher targets of `n` sentences, stored under `folder` in chunks.

    Args:
        folder: the cache folder (see `build`).
        lengths: words per sentence, in sentence order.
        chunk: sentences per chunk file.
        keep: chunks held in memory at once (least recently used ones are dropped).
    """

    def __init__(self, folder: str, lengths: Sequence[int], chunk: int = CACHE_CHUNK,
                 keep: int = GROUP + 1):
        self.folder = folder
        self.lengths = np.asarray(lengths, np.int64)
        self.chunk = chunk
        self.keep = keep
        self._loaded: collections.OrderedDict[int, dict] = collections.OrderedDict()
        self.loads = 0  # chunk files read so far (tests check the streaming with it)
        self.max_loaded = 0
        with np.load(self.path(0)) as first:
            self.keys = tuple(k for k in first.files if k != "lengths")

    @classmethod
    def build(cls, compute: Callable[[list], dict[str, list[np.ndarray]]], sentences: list,
              folder: str, chunk: int = CACHE_CHUNK, keep: int = GROUP + 1,
              log: Callable[[str], None] | None = None) -> TeacherCache:
        """Computes the chunks of `sentences` missing under `folder` and returns the cache.

        Args:
            compute: sentences -> {key: per-sentence `[words, ...]` arrays} (the teacher).
            sentences: the unlabelled sentences (their order fixes the chunks).
            folder: where `chunk-NNNNN.npz` files go; existing ones are reused, not recomputed.
            chunk, keep: see the class.
            log: progress messages (one per computed chunk), or None.
        """
        if not sentences:
            raise ValueError("no sentences to cache teacher outputs for")
        n_chunks = math.ceil(len(sentences) / chunk)
        for c in range(n_chunks):
            path = chunk_path(folder, c)
            if os.path.exists(path):
                continue
            part = sentences[c * chunk:(c + 1) * chunk]
            values = compute(part)
            os.makedirs(folder, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp.npz"  # runs sharing a folder write their own
            np.savez(tmp, lengths=np.array([len(s.words) for s in part]),
                     **{k: np.concatenate(v) for k, v in values.items()})
            os.replace(tmp, path)
            if log:
                log(f"teacher cache: chunk {c + 1}/{n_chunks} written ({folder})")
        return cls(folder, [len(s.words) for s in sentences], chunk, keep)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def n_chunks(self) -> int:
        return math.ceil(len(self.lengths) / self.chunk)

    def path(self, c: int) -> str:
        return chunk_path(self.folder, c)

    def _chunk(self, c: int) -> dict[str, list[np.ndarray]]:
        if c in self._loaded:
            self._loaded.move_to_end(c)
            return self._loaded[c]
        with np.load(self.path(c)) as saved:
            lengths = saved["lengths"]
            expected = self.lengths[c * self.chunk:(c + 1) * self.chunk]
            if not np.array_equal(lengths, expected):
                raise ValueError(f"{self.path(c)}: written for other sentences (word counts "
                                 "differ); delete the teacher_cache folder of this run")
            ends = np.cumsum(lengths)[:-1]
            values = {k: np.split(saved[k], ends) for k in self.keys}
        self.loads += 1
        self._loaded[c] = values
        while len(self._loaded) > self.keep:
            self._loaded.popitem(last=False)
        self.max_loaded = max(self.max_loaded, len(self._loaded))
        return values

    def sentence(self, key: str, s: int) -> np.ndarray:
        """The `[words, ...]` target `key` of sentence `s`."""
        return self._chunk(s // self.chunk)[key][s % self.chunk]

    def load_all(self) -> dict[str, list[np.ndarray]]:
        """Every sentence's targets in memory (small sets only: dev, tests)."""
        out: dict[str, list[np.ndarray]] = {k: [] for k in self.keys}
        for c in range(self.n_chunks):
            for k, v in self._chunk(c).items():
                out[k].extend(v)
        return out

    def window_view(self, windows: Sequence[features.Window], key: str) -> _WindowTargets:
        """Per-window `[W, ...]` arrays of `key`, read from the chunks on demand."""
        return _WindowTargets(self, windows, key)

    def batches(self, windows: Sequence[features.Window], keys: Sequence[str], batch_size: int,
                max_seq_length: int, pad_id: int, seed: int, group: int = GROUP
                ) -> StreamedBatches:
        """One epoch of shuffled training batches of `windows` with the targets `keys`.

        Args:
            windows: the student's windows of the cached sentences (`Window.sentence` indexes
                them).
            keys: the target keys the batches carry (others are not read).
            batch_size, max_seq_length, pad_id: as in `features.make_batches`.
            seed: fixes the chunk order and every shuffle (use one per epoch).
            group: chunks shuffled together (memory holds `group + 1` chunks).
        """
        rng = np.random.default_rng(seed)
        by_chunk: list[list[int]] = [[] for _ in range(self.n_chunks)]
        for i, w in enumerate(windows):
            by_chunk[w.sentence // self.chunk].append(i)
        order = rng.permutation(self.n_chunks)
        plan = []
        for g in range(0, len(order), group):
            members = [i for c in order[g:g + group] for i in by_chunk[c]]
            plan.extend(features.batch_groups(windows, members, batch_size, max_seq_length,
                                              rng, shuffle=True))
        views = {k: self.window_view(windows, k) for k in keys if k in self.keys}
        return StreamedBatches(windows, plan, pad_id, views)


class _WindowTargets:
    """`view[i]`: the cached `[W, ...]` target of window `i` (a slice of its sentence's)."""

    def __init__(self, cache: TeacherCache, windows: Sequence[features.Window], key: str):
        self.cache, self.windows, self.key = cache, windows, key

    def __getitem__(self, i: int) -> np.ndarray:
        w = self.windows[i]
        return self.cache.sentence(self.key, w.sentence)[w.word_start:w.word_end]

    def __len__(self) -> int:
        return len(self.windows)


class StreamedBatches(Sequence):
    """A lazy list of padded batches: each is built (and its chunks read) when it is asked for."""

    def __init__(self, windows, plan: list[tuple[int, list[int]]], pad_id: int, views: dict):
        self.windows, self.plan, self.pad_id, self.views = windows, plan, pad_id, views

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return StreamedBatches(self.windows, self.plan[i], self.pad_id, self.views)
        t, idx = self.plan[i]
        return features.pad_batch(self.windows, idx, t, self.pad_id, self.views or None)

    def __iter__(self):
        for i in range(len(self.plan)):
            yield self[i]
