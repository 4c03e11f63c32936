"""Tests for xtremedistil_tf.stats: counts, table rendering and the command line."""

import pathlib

from xtremedistil_tf import data, labels, stats

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def _fixture(name):
    return str(FIXTURES / name)


def test_dataset_stats_hand_counted():
    sentences = [
        data.Sentence(words=("John", "met", "Mary", "."), tags=("B-PER", "O", "B-PER", "O")),
        data.Sentence(words=("New", "York", "."), tags=("B-LOC", "I-LOC", "O"), lang="en"),
    ]
    result = stats.dataset_stats(sentences)
    assert result == {
        "sentences": 2,
        "tokens": 7,
        "unique_tokens": 6,
        "mean_length": 3.5,
        "max_length": 4,
        "entities": 3,
        "tags": {"B-LOC": 1, "B-PER": 2, "I-LOC": 1, "O": 3},
        "entities_by_type": {"LOC": 1, "PER": 2},
        "languages": {"en": {"sentences": 1, "tokens": 3, "entities": 1}},
    }


def test_dataset_stats_unlabelled_and_empty():
    result = stats.dataset_stats(data.read_unlabelled(_fixture("tiny_unlabelled.txt")))
    assert result["sentences"] == 5 and result["entities"] == 0 and result["tags"] == {}
    assert stats.dataset_stats([])["mean_length"] == 0.0


def test_train_fixture_stats():
    result = stats.dataset_stats(data.read_conll(_fixture("tiny_train.conll")))
    assert result["sentences"] == 10
    assert result["entities_by_type"] == {"LOC": 9, "ORG": 6, "PER": 5}


def test_format_stats_with_languages():
    sentences = data.read_conll(_fixture("tiny_xtreme.tsv"))
    table = stats.format_stats({"train": stats.dataset_stats(sentences)})
    lines = table.splitlines()
    assert lines[0].startswith("| split | sentences | tokens |")
    assert lines[2].startswith("| train | 5 | 28 | ")
    assert "B-LOC:4" in lines[2]
    assert "| train | de | 2 | 12 | 4 |" in lines
    assert "| train | en | 3 | 16 | 4 |" in lines


def test_format_stats_without_languages_has_no_language_table():
    result = stats.dataset_stats(data.read_conll(_fixture("tiny_dev.conll")))
    assert "| lang |" not in stats.format_stats({"dev": result})


def test_main_prints_all_splits(capsys):
    argv = [
        f"--train_file={_fixture('tiny_iob1.conll')}",
        f"--dev_file={_fixture('tiny_dev.conll')}",
        f"--test_file={_fixture('tiny_test.conll')},{_fixture('tiny_xtreme.tsv')}",
        f"--transfer_file={_fixture('tiny_unlabelled.txt')}",
    ]
    assert stats.main(argv) == 0
    out = capsys.readouterr().out
    for split in ("train", "dev", "test", "transfer"):
        assert f"| {split} |" in out
    assert "scheme iob1, 10 tags changed" in out
    assert "| test | en | 3 | 16 | 4 |" in out


def test_main_bad_file_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.conll"
    bad.write_text("a\tO\nb\n")
    assert stats.main([f"--train_file={bad}"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: {bad}:2: found one column ('b'), expected 'token<TAB>tag'; " \
        "add the tag column, or read the file as unlabelled data\n"


def test_main_scheme_flag_is_applied(capsys, tmp_path):
    assert stats.main([f"--train_file={_fixture('tiny_bioes.conll')}", "--tag_scheme=bioes"]) == 0
    assert "S-LOC" not in capsys.readouterr().out
    assert stats.main([]) == 2
    assert "give at least one of --train_file" in capsys.readouterr().err
    assert stats.main(["--tag_scheme=xyz", f"--train_file={_fixture('tiny_io.conll')}"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_convert_before_stats_counts_iob2_entities():
    converted, _ = labels.convert_sentences(data.read_conll(_fixture("tiny_io.conll")), "io")
    assert stats.dataset_stats(converted)["entities_by_type"] == {"LOC": 3, "ORG": 3, "PER": 2}
