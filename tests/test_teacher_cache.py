"""The on-disk teacher cache streams batches: every window once per epoch with its own targets,
a seeded order that mixes chunks, bounded memory, and resumable slices."""

import dataclasses

import numpy as np
import pytest

from xtremedistil_tf import data, features, teacher_cache


class _Tok:
    """A stand-in tokenizer: one sub-word per character-pair, ids from a fixed hash."""

    pad_token_id, cls_token_id, sep_token_id, unk_token_id = 0, 1, 2, 3

    def __call__(self, words_batch, is_split_into_words=True, add_special_tokens=False,
                 verbose=True):
        ids, word_ids = [], []
        for words in words_batch:
            row_ids, row_words = [], []
            for w, word in enumerate(words):
                for k in range(0, len(word), 2):
                    row_ids.append(4 + sum(map(ord, word[k:k + 2])) % 90)
                    row_words.append(w)
            ids.append(row_ids)
            word_ids.append(row_words)

        class Enc(dict):
            def word_ids(self, i):
                return word_ids[i]

        return Enc(input_ids=ids)


def _sentences(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        words = tuple(f"w{i}x{j}" + "ab" * int(rng.integers(0, 6)) for j in
                      range(int(rng.integers(1, 9))))
        out.append(data.Sentence(words=words, tags=None))
    return out


def _compute(calls):
    """A fake teacher: targets that encode (sentence id, word) so a mix-up cannot pass."""
    def compute(part):
        calls.append(len(part))
        logits, hidden = [], []
        for s in part:
            sid = int(s.words[0][1:].split("x")[0])
            n = len(s.words)
            logits.append(np.stack([np.full(3, sid * 100 + j, np.float32) for j in range(n)]))
            hidden.append(np.full((n, 2, 4), sid % 1000, np.float16))
        return {"teacher_logits": logits, "teacher_hidden": hidden}
    return compute


@pytest.fixture()
def built(tmp_path):
    sentences = _sentences(53)
    calls = []
    cache = teacher_cache.TeacherCache.build(_compute(calls), sentences, str(tmp_path / "c"),
                                             chunk=8, keep=3)
    windows = features.make_windows(sentences, _Tok(), None, 20)  # long ones split
    return sentences, cache, windows, calls


def test_every_window_once_with_its_own_targets(built):
    sentences, cache, windows, calls = built
    assert calls == [8] * 6 + [5] and cache.n_chunks == 7
    assert any(w.word_start > 0 for w in windows)  # some sentences span several windows
    batches = cache.batches(windows, ["teacher_logits"], 4, 20, 0, seed=7, group=2)
    seen = []
    for batch in batches:
        assert "teacher_hidden" not in batch  # only the keys asked for are read
        assert batch["input_ids"].shape[0] <= 4
        for row, w in enumerate(batch["window"]):
            win = windows[w]
            n = len(win.word_index)
            sid = win.sentence
            expect = (sid * 100 + np.arange(win.word_start, win.word_end))[:, None].repeat(3, 1)
            np.testing.assert_array_equal(batch["teacher_logits"][row, :n], expect)
            assert not batch["teacher_logits"][row, n:].any()
            np.testing.assert_array_equal(batch["input_ids"][row, :len(win.input_ids)],
                                          win.input_ids)
            seen.append(int(w))
    assert sorted(seen) == list(range(len(windows)))


def test_order_is_seeded_mixes_chunks_and_memory_is_bounded(built):
    _, cache, windows, _ = built
    a = [list(b["window"]) for b in cache.batches(windows, ["teacher_hidden"], 4, 20, 0, seed=1)]
    b = [list(b["window"]) for b in cache.batches(windows, ["teacher_hidden"], 4, 20, 0, seed=1)]
    c = [list(b["window"]) for b in cache.batches(windows, ["teacher_hidden"], 4, 20, 0, seed=2)]
    assert a == b and a != c
    chunk_of = [[windows[w].sentence // 8 for w in batch] for batch in a]
    assert any(len(set(x)) > 1 for x in chunk_of)  # batches mix the chunks of a group
    first_chunks = [x[0] for x in chunk_of]
    assert first_chunks != sorted(first_chunks)  # chunks are not visited in file order
    assert cache.max_loaded <= 3
    # One pass reads each chunk once: a group's chunks stay loaded while its batches are made.
    cache.loads = 0
    list(cache.batches(windows, ["teacher_hidden"], 4, 20, 0, seed=3, group=2))
    assert cache.loads <= cache.n_chunks + 1


def test_a_slice_resumes_the_same_epoch(built):
    _, cache, windows, _ = built
    full = cache.batches(windows, ["teacher_logits"], 4, 20, 0, seed=5)
    rest = full[5:]
    assert len(rest) == len(full) - 5
    for x, y in zip(list(full)[5:], rest, strict=True):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_cache_is_reused_and_stale_chunks_are_refused(built, tmp_path):
    sentences, cache, _, _ = built
    calls = []
    again = teacher_cache.TeacherCache.build(_compute(calls), sentences, cache.folder, chunk=8)
    assert calls == []  # nothing recomputed
    everything = again.load_all()
    assert len(everything["teacher_logits"]) == len(sentences)
    other = [dataclasses.replace(s, words=s.words + ("more",)) for s in sentences]
    stale = teacher_cache.TeacherCache.build(_compute([]), other, cache.folder, chunk=8)
    with pytest.raises(ValueError, match="written for other sentences"):
        stale.sentence("teacher_logits", 0)


def _dcfg(transfer, **kw):
    from xtremedistil_tf import config

    f = str(__import__("conftest").FIXTURES)
    return config.DataConfig(train_files=(f"en={f}/tiny_train.conll",),
                             dev_files=(f"en={f}/tiny_dev.conll",),
                             test_files=(f"{f}/tiny_test.conll",), transfer_files=transfer, **kw)


def test_transfer_files_drop_their_tags_and_never_are_dev_or_test(tmp_path):
    from conftest import fixture_path

    from xtremedistil_tf import run_data

    rows = open(fixture_path("tiny_test.conll"), encoding="utf-8").read().splitlines()
    rng = np.random.default_rng(0)
    tags = ["O", "B-PER", "I-ORG", "B-LOC", "I-MISC"]
    scrambled = "\n".join(f"{r.split()[0]}\t{tags[rng.integers(len(tags))]}" if r.strip()
                          else "" for r in rows) + "\n"
    copy = tmp_path / "copy.conll"
    copy.write_text("\n".join(rows) + "\n", encoding="utf-8")
    other = tmp_path / "scrambled.conll"
    other.write_text(scrambled, encoding="utf-8")
    a = run_data.load_data(_dcfg((f"de={copy}",))).unlabelled["transfer"]
    b = run_data.load_data(_dcfg((f"de={other}",))).unlabelled["transfer"]
    assert [(s.words, s.lang) for s in a] == [(s.words, s.lang) for s in b]
    assert all(s.tags is None for s in a)
    assert sum(s.lang == "de" for s in a) == sum(1 for _ in data.read_conll(str(copy)))
    with pytest.raises(data.DataError, match="also a dev or test file"):
        run_data.load_data(_dcfg((fixture_path("tiny_test.conll"),)))


def test_cache_key_changes_with_what_the_outputs_depend_on():
    """Runs sharing --teacher_cache_dir reuse outputs only for the same teacher, tokenizer,
    windowing, labels and sentences."""
    import os

    from conftest import MODELS
    from xtremedistil_tf import config, models
    from xtremedistil_tf.tagging import Tagger
    from xtremedistil_tf.teacher_outputs import cache_key

    labels = ["O", "B-PER", "I-PER"]
    path = os.path.join(MODELS, "tiny_bert")
    tok = models.load_tokenizer(path)
    dcfg = config.DataConfig(("t",), ("d",), ("e",), max_seq_length=32)
    sentences = _sentences(20)

    def key(model, dcfg=dcfg, labels=labels, sentences=sentences):
        return cache_key(Tagger(model, tok, dcfg, labels), sentences, dcfg)

    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    teacher, _, _ = models.build_teacher(path, labels, 0.1)
    tf.keras.utils.set_random_seed(0)
    same, _, _ = models.build_teacher(path, labels, 0.1)  # built again: the same weights
    base = key(teacher)
    assert key(same) == base and len(base) == 16
    moved = _sentences(20)
    moved[3] = dataclasses.replace(moved[3], lang="de")
    others = [key(teacher, sentences=_sentences(19)), key(teacher, sentences=moved),
              key(teacher, dcfg=dataclasses.replace(dcfg, max_seq_length=64)),
              key(teacher, labels=["O", "B-LOC", "I-LOC"])]
    weight = same.weights[5]
    weight.assign(weight + 1e-3)
    others.append(key(same))
    assert len({base, *others}) == len(others) + 1


def test_a_finished_cache_with_more_outputs_serves_a_run_that_needs_fewer(tmp_path):
    def make(entry, chunks):
        folder = tmp_path / entry
        folder.mkdir()
        for c in range(chunks):
            (folder / f"chunk-{c:05d}.npz").write_bytes(b"")
        return str(folder)

    n = 2 * teacher_cache.CACHE_CHUNK + 1  # three chunks
    full = make("transfer-logits-h6-abc", 3)
    make("transfer-logits-h6-aux-abc", 2)  # unfinished: chunks added to it would lack outputs
    make("transfer-logits-h3-def", 3)  # another teacher or text
    find = teacher_cache.find_complete
    assert find(str(tmp_path), "transfer", ["logits"], "abc", n) == full
    assert find(str(tmp_path), "transfer", ["logits", "h6"], "abc", n) == full
    assert find(str(tmp_path), "transfer", ["logits", "h6", "aux"], "abc", n) is None
    assert find(str(tmp_path), "transfer", ["logits", "h3"], "abc", n) is None
    assert find(str(tmp_path), "target", ["logits"], "abc", n) is None
    assert find(str(tmp_path / "none"), "transfer", ["logits"], "abc", n) is None
