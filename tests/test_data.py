"""Tests for xtremedistil_tf.data: CoNLL / XTREME / plain-text readers and the writer."""

import os
import pathlib

import pytest

from xtremedistil_tf import data

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def _write(tmp_path, text, name="f.conll", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return str(path)


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(data.DataError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_read_tiny_train():
    path = str(FIXTURES / "tiny_train.conll")
    sentences = data.read_conll(path)
    assert len(sentences) == 10
    first = sentences[0]
    assert first.words == ("John", "Smith", "works", "for", "Acme", "Corp", "in", "London", ".")
    assert first.tags == ("B-PER", "I-PER", "O", "O", "B-ORG", "I-ORG", "O", "B-LOC", "O")
    assert first.lang is None
    assert first.source == f"{path}:1"
    assert sentences[1].source == f"{path}:11"  # 9 tokens + 1 blank line before it


def test_tab_only_lines_separate_sentences_and_crlf_bom(tmp_path):
    text = "\ufeffParis\tB-LOC\r\nis\tO\r\n\t\r\nRome\tB-LOC\r\n  \r\nOslo\tB-LOC\r\n"
    sentences = data.read_conll(_write(tmp_path, text))
    assert [s.words for s in sentences] == [("Paris", "is"), ("Rome",), ("Oslo",)]
    assert sentences[0].tags == ("B-LOC", "O")
    assert sentences[2].source.endswith(":6")


def test_conll2003_columns_docstart_and_whitespace(tmp_path):
    path = str(FIXTURES / "tiny_iob1.conll")
    sentences = data.read_conll(path)
    assert len(sentences) == 5
    assert sentences[0].words[:2] == ("John", "Smith")
    assert sentences[0].tags[:2] == ("I-PER", "I-PER")  # last column, not the chunk column
    assert sentences[0].source == f"{path}:3"


def test_docstart_without_blank_line_still_splits(tmp_path):
    text = "a\tO\n-DOCSTART-\tO\nb\tO\n"
    assert [s.words for s in data.read_conll(_write(tmp_path, text))] == [("a",), ("b",)]


def test_xtreme_prefixes_are_stripped():
    sentences = data.read_conll(str(FIXTURES / "tiny_xtreme.tsv"))
    assert [s.lang for s in sentences] == ["en", "de", "en", "de", "en"]
    assert sentences[1].words == ("Angela", "Merkel", "besuchte", "Paris", ".")
    assert "München" in sentences[3].words
    # Split on the first colon only.
    assert sentences[4].words[1] == "http://example.com"


def test_colon_tokens_in_normal_file_are_kept(tmp_path):
    text = "see\tO\nhttp://x.org\tO\n\nen:route\tO\n"
    sentences = data.read_conll(_write(tmp_path, text))
    assert sentences[0].words == ("see", "http://x.org")
    assert sentences[1].words == ("en:route",)
    assert all(s.lang is None for s in sentences)


def test_region_language_prefix_and_caller_lang(tmp_path):
    sentences = data.read_conll(_write(tmp_path, "zh-yue:香港\tB-LOC\n"))
    assert sentences[0].lang == "zh-yue" and sentences[0].words == ("香港",)
    plain = data.read_conll(str(FIXTURES / "tiny_dev.conll"), lang="en")
    assert {s.lang for s in plain} == {"en"}


def test_file_spec_gives_language_to_plain_files(tmp_path):
    dev = str(FIXTURES / "tiny_dev.conll")
    assert data.file_language("de=" + dev) == ("de", dev)
    assert data.file_language(dev) == (None, dev)
    assert data.file_language("runs/a=b/x.conll") == (None, "runs/a=b/x.conll")
    mixed = data.read_labelled_files(f"de={dev},{dev}")
    n = len(data.read_conll(dev))
    assert [s.lang for s in mixed] == ["de"] * n + [None] * n
    text = tmp_path / "t.txt"
    text.write_text("Hallo Welt\n", encoding="utf-8")
    assert data.read_unlabelled_files(f"de={text}")[0].lang == "de"
    with pytest.raises(data.DataError, match="missing.conll"):
        data.read_labelled_files(f"de={tmp_path}/missing.conll")


def test_mixed_languages_in_sentence_is_error(tmp_path):
    path = _write(tmp_path, "en:a\tO\nde:b\tO\n")
    message = _error(data.read_conll, path)
    assert message.startswith(f"{path}:2: ")
    assert "blank line" in message


def test_unlabelled_conll_ignores_tags(tmp_path):
    sentences = data.read_conll(str(FIXTURES / "tiny_dev.conll"), labelled=False)
    assert len(sentences) == 6 and all(s.tags is None for s in sentences)
    one_column = data.read_conll(_write(tmp_path, "a\nb\n\nc\n"), labelled=False)
    assert [s.words for s in one_column] == [("a", "b"), ("c",)]


@pytest.mark.parametrize(
    "text,line,needle",
    [
        ("Paris\tB-LOC\nRome\n", 2, "expected 'token<TAB>tag'"),
        ("Paris\n", 1, "expected 'token<TAB>tag'"),
        ("Paris\tB-LOC\n\tO\n", 2, "empty token"),
        ("Paris\tNNP\tB-LOC\nis\tO\n", 2, "expected 3 columns like line 1"),
        ("-DOCSTART-\tO\n\n", 1, "no labelled sentences"),
        ("en:Paris\tB-LOC\nen:\tO\n", 2, "empty token"),
    ],
)
def test_errors_name_file_and_line(tmp_path, text, line, needle):
    path = _write(tmp_path, text)
    message = _error(data.read_conll, path)
    assert message.startswith(f"{path}:{line}: ")
    assert needle in message
    assert "; " in message  # problem; fix


def test_missing_empty_and_non_utf8_files(tmp_path):
    missing = str(tmp_path / "nope.conll")
    assert _error(data.read_conll, missing) == f"{missing}: file not found; check the path"
    empty = _write(tmp_path, " \n\n", name="empty.conll")
    assert _error(data.read_conll, empty).startswith(f"{empty}:1: file is empty")
    latin = _write(tmp_path, "a\tO\n\nZürich\tB-LOC\n", name="latin.conll", encoding="latin-1")
    message = _error(data.read_conll, latin)
    assert message.startswith(f"{latin}:3: not valid UTF-8 (byte offset 6")
    assert "iconv" in message


def test_read_unlabelled_lines():
    path = str(FIXTURES / "tiny_unlabelled.txt")
    sentences = data.read_unlabelled(path)
    assert len(sentences) == 5
    assert sentences[2].words == ("Ein", "Zug", "fährt", "von", "Köln", "nach", "Hamburg", ".")
    assert sentences[3].source == f"{path}:5"  # the blank line 4 is skipped, not counted
    assert all(s.tags is None for s in sentences)


def test_read_unlabelled_detects_conll():
    sentences = data.read_unlabelled(str(FIXTURES / "tiny_train.conll"))
    assert len(sentences) == 10
    assert sentences[0].words[0] == "John" and sentences[0].tags is None


def test_read_unlabelled_short_lines_without_blank_are_lines(tmp_path):
    # No blank-line layout: a file of short lines is one sentence per line.
    sentences = data.read_unlabelled(_write(tmp_path, "hello world\ngood bye\n"))
    assert [s.words for s in sentences] == [("hello", "world"), ("good", "bye")]


def test_read_unlabelled_layout_override_and_xtreme(tmp_path):
    path = _write(tmp_path, "en:hi en:there\n\nde:guten de:Tag\n")
    as_lines = data.read_unlabelled(path, layout="lines")
    expected = [("en", ("hi", "there")), ("de", ("guten", "Tag"))]
    assert [(s.lang, s.words) for s in as_lines] == expected
    with pytest.raises(ValueError):
        data.read_unlabelled(path, layout="json")


def test_read_files_comma_separated():
    train, dev = str(FIXTURES / "tiny_train.conll"), str(FIXTURES / "tiny_dev.conll")
    assert len(data.read_labelled_files(f"{train}, {dev}")) == 16
    assert len(data.read_labelled_files([train])) == 10
    assert len(data.read_unlabelled_files(f"{dev},{FIXTURES / 'tiny_unlabelled.txt'}")) == 11
    assert "no data file given" in _error(data.read_labelled_files, " , ")


def test_write_then_read_round_trip(tmp_path):
    sentences = data.read_conll(str(FIXTURES / "tiny_xtreme.tsv"))
    out = str(tmp_path / "out.conll")
    data.write_conll(out, sentences)
    back = data.read_conll(out)
    assert [(s.words, s.tags) for s in back] == [(s.words, s.tags) for s in sentences]
    data.write_conll(out, sentences, with_lang=True)
    assert [s.lang for s in data.read_conll(out)] == [s.lang for s in sentences]
    assert os.listdir(tmp_path) == ["out.conll"]  # no temporary file left behind


def test_write_rejects_unreadable_token_and_keeps_old_file(tmp_path):
    out = tmp_path / "out.conll"
    out.write_text("old\tO\n")
    bad = data.Sentence(words=("New York",), tags=("B-LOC",), source="x:1")
    with pytest.raises(ValueError, match="x:1"):
        data.write_conll(str(out), [bad])
    assert out.read_text() == "old\tO\n"
    assert os.listdir(tmp_path) == ["out.conll"]


def test_sentence_validates_and_stores_tuples():
    s = data.Sentence(words=["a", "b"], tags=["O", "O"])
    assert s.words == ("a", "b") and s.tags == ("O", "O")
    with pytest.raises(ValueError, match="2 words but 1 tags"):
        data.Sentence(words=("a", "b"), tags=("O",))
