"""Sub-word alignment, windowing, merging back and bucketed batches."""

import numpy as np
import pytest

from xtremedistil_tf import data, features

LABELS = {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3, "I-LOC": 4}


def sent(words, tags=None, source="f.conll:1"):
    return data.Sentence(tuple(words), tuple(tags) if tags else None, source=source)


def pieces(tokenizer, word):
    return tokenizer(word, add_special_tokens=False)["input_ids"]


def test_first_subword_alignment(tiny_tokenizer):
    s = sent(["John", "visited", "Qxzw", "."], ["B-PER", "O", "B-LOC", "O"])
    (w,) = features.make_windows([s], tiny_tokenizer, LABELS, 64)
    expected_ids = [tiny_tokenizer.cls_token_id]
    expected_index = []
    for word in s.words:
        expected_index.append(len(expected_ids))
        expected_ids += pieces(tiny_tokenizer, word)
    expected_ids.append(tiny_tokenizer.sep_token_id)
    assert w.input_ids.tolist() == expected_ids
    assert w.word_index.tolist() == expected_index
    assert len(pieces(tiny_tokenizer, "Qxzw")) > 1  # the test needs a multi-piece word
    assert w.word_labels.tolist() == [1, 0, 3, 0]
    assert w.token_labels[expected_index].tolist() == [1, 0, 3, 0]
    # Special tokens carry no label.
    assert w.token_labels[0] == w.token_labels[-1] == features.IGNORE


def test_continuation_subwords_get_the_inside_tag(tiny_tokenizer):
    s = sent(["Qxzw", "Qxzw"], ["B-LOC", "O"])
    (w,) = features.make_windows([s], tiny_tokenizer, LABELS, 64)
    n = len(pieces(tiny_tokenizer, "Qxzw"))
    assert w.token_labels.tolist() == ([features.IGNORE, 3] + [4] * (n - 1) + [0] * n
                                       + [features.IGNORE])
    (batch,) = features.make_batches([w], 1, 64, 0)
    assert np.flatnonzero(batch["token_first"][0]).tolist() == w.word_index.tolist()


def test_long_sentence_split_into_windows_and_merged_back(tiny_tokenizer):
    words = ["John", "Qxzw", "visited", "London"] * 9
    s = sent(words, ["B-PER", "O", "O", "B-LOC"] * 9)
    max_len = 12
    windows = features.make_windows([s, sent(["Mary"], ["B-PER"])], tiny_tokenizer, LABELS,
                                    max_len)
    first = [w for w in windows if w.sentence == 0]
    assert len(first) > 1
    assert all(len(w.input_ids) <= max_len for w in windows)
    # Windows tile the sentence: consecutive, no gaps, no overlaps.
    assert [w.word_start for w in first] == [0] + [w.word_end for w in first[:-1]]
    assert first[-1].word_end == len(words)
    per_window = [np.arange(w.word_start, w.word_end) for w in windows]
    merged = features.merge_windows(windows, per_window, 2, [len(words), 1])
    assert merged[0].tolist() == list(range(len(words)))
    assert merged[1].tolist() == [0]


def test_merge_refuses_missing_words(tiny_tokenizer):
    windows = features.make_windows([sent(["a", "b"])], tiny_tokenizer, None, 16)
    with pytest.raises(ValueError, match="1 word predictions for 2 words"):
        features.merge_windows(windows, [np.zeros(1)], 1, [2])


def test_word_longer_than_window_is_a_clear_error(tiny_tokenizer):
    s = sent(["Qxzwqxzwqxzwqxzw"], source="train.conll:7")
    with pytest.raises(data.DataError, match=r"train.conll:7: .*--max_seq_length=8"):
        features.make_windows([s], tiny_tokenizer, None, 8)


def test_word_without_subwords_becomes_unknown(tiny_tokenizer):
    s = sent(["John", "\u200b", "."])  # a zero-width space tokenizes to nothing
    (w,) = features.make_windows([s], tiny_tokenizer, None, 16)
    assert len(w.word_index) == 3
    assert w.input_ids[w.word_index[1]] == tiny_tokenizer.unk_token_id


def test_batches_pad_to_bucket_and_carry_word_targets(tiny_tokenizer):
    sentences = [sent(["John"] * n) for n in (1, 3, 20, 2)]
    windows = features.make_windows(sentences, tiny_tokenizer, None, 64)
    targets = {"t": [np.full((len(w.word_index), 2), i, np.float32) for i, w in enumerate(windows)],
               # Cached teacher hidden states are float16; the step gets float32 (oneDNN has no
               # float16 kernels without AVX-512 and says so on stderr).
               "h": [np.full((len(w.word_index), 1, 3), i, np.float16)
                     for i, w in enumerate(windows)]}
    batches = features.make_batches(windows, 2, 64, tiny_tokenizer.pad_token_id, targets)
    assert {b["h"].dtype for b in batches} == {np.dtype(np.float32)}
    # Three short windows (bucket 16, batches of 2) and one of 22 sub-words (bucket 32).
    assert sorted(b["input_ids"].shape[1] for b in batches) == [16, 16, 32]
    seen = []
    for b in batches:
        t = b["input_ids"].shape[1]
        assert t in features.bucket_lengths(64)
        for key in ("attention_mask", "word_index", "word_mask", "token_first", "token_labels",
                    "word_labels"):
            assert b[key].shape == b["input_ids"].shape
        assert b["t"].shape == (len(b["window"]), t, 2)
        for row, w in enumerate(b["window"]):
            n = len(windows[w].word_index)
            assert b["word_mask"][row].sum() == n
            assert (b["t"][row, :n] == w).all() and (b["t"][row, n:] == 0).all()
            assert b["attention_mask"][row].sum() == len(windows[w].input_ids)
            seen.append(int(w))
    assert sorted(seen) == [0, 1, 2, 3]


def test_shuffle_is_deterministic_per_seed(tiny_tokenizer):
    windows = features.make_windows([sent(["John"] * (i % 5 + 1)) for i in range(40)],
                                    tiny_tokenizer, None, 32)

    def order(seed):
        batches = features.make_batches(windows, 4, 32, 0, shuffle=True, seed=seed)
        return [b["window"].tolist() for b in batches]

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert sorted(sum(order(1), [])) == list(range(40))


def test_dataset_yields_the_batches(tiny_tokenizer):
    windows = features.make_windows([sent(["John", "Smith"]), sent(["London"])],
                                    tiny_tokenizer, None, 16)
    batches = features.make_batches(windows, 8, 16, 0)
    (element,) = list(features.to_dataset(batches, ["input_ids", "word_index"]))
    np.testing.assert_array_equal(element["input_ids"].numpy(), batches[0]["input_ids"])
    assert set(element) == {"input_ids", "word_index"}


def test_long_sentences_raise_no_over_length_warning(tiny_tokenizer):
    """Sentences longer than the tokenizer's maximum are windowed (and only counted for
    --trim_vocab), so transformers' "indexing errors" warning would only alarm users."""
    import logging

    import transformers

    from xtremedistil_tf import vocab_trim

    class Messages(logging.Handler):
        def __init__(self):
            super().__init__()
            self.seen = []

        def emit(self, record):
            self.seen.append(record.getMessage())

    messages = Messages()
    library = transformers.logging.get_logger("transformers")  # does not propagate to root
    library.addHandler(messages)
    long = sent(["John", "Qxzw", "visited", "London"] * 9)
    limit = tiny_tokenizer.model_max_length
    transformers.logging.set_verbosity_warning()
    try:
        tiny_tokenizer.model_max_length = 8
        tiny_tokenizer.deprecation_warnings.clear()  # the warning is given once per tokenizer
        features.make_windows([long], tiny_tokenizer, LABELS, 12)
        vocab_trim.covered_ids(tiny_tokenizer, [long])
        assert not [m for m in messages.seen if "longer than the specified maximum" in m]
        tiny_tokenizer([list(long.words)], is_split_into_words=True)  # the check can fail
        assert [m for m in messages.seen if "longer than the specified maximum" in m]
    finally:
        library.removeHandler(messages)
        tiny_tokenizer.model_max_length = limit
        tiny_tokenizer.deprecation_warnings.clear()
        transformers.logging.set_verbosity_error()
