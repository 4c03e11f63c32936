"""Tests for xtremedistil_tf.labels: schemes and label sets."""

import pathlib

import pytest

from xtremedistil_tf import data, labels

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
DATA_LABELS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
IO_TEACHER = ["LOC", "ORG", "PER", "O"]  # e.g. jplu/tf-xlm-r-ner-40-lang

# IOB2 of the sentences in the tiny_{iob1,bioes,io}.conll fixtures, written by hand.
EXPECTED_IOB2 = {
    "john": "B-PER I-PER O O B-ORG I-ORG O B-LOC O",
    "mary": "B-PER O B-LOC I-LOC O O O",
    "un": "O B-ORG I-ORG O O B-LOC O O O",
    "trains": "O O B-LOC B-LOC O B-LOC O",
    "bank": "O B-ORG I-ORG I-ORG O O O",
}


def _read(name):
    return data.read_conll(str(FIXTURES / name))


def test_split_tag():
    assert labels.split_tag("B-LOC") == ("B", "LOC")
    assert labels.split_tag("I-PER-DERIV") == ("I", "PER-DERIV")
    assert labels.split_tag("LOC") == ("", "LOC")
    assert labels.split_tag("O") == ("O", "")
    with pytest.raises(ValueError, match="X-LOC"):
        labels.split_tag("X-LOC")


@pytest.mark.parametrize(
    "name,scheme",
    [
        ("tiny_train.conll", "iob2"),
        ("tiny_iob1.conll", "iob1"),
        ("tiny_bioes.conll", "bioes"),
        ("tiny_io.conll", "io"),
        ("tiny_xtreme.tsv", "iob2"),
    ],
)
def test_detect_scheme_on_fixtures(name, scheme):
    assert labels.detect_scheme(s.tags for s in _read(name)) == scheme


def test_detect_scheme_rules():
    assert labels.detect_scheme([["I-PER", "I-PER", "O"]]) == "io"  # only I- tags
    assert labels.detect_scheme([["O", "O"]]) == "io"
    assert labels.detect_scheme([["B-PER", "I-LOC"]]) == "iob1"  # I-LOC starts an entity
    assert labels.detect_scheme([["B-PER", "I-PER"], ["O", "U-LOC"]]) == "bioes"
    assert labels.detect_scheme([["B-PER", "I-PER", "B-PER"]]) == "iob2"


@pytest.mark.parametrize(
    "tags,scheme,expected,changed",
    [
        ("I-PER I-PER O I-LOC B-LOC", "iob1", "B-PER I-PER O B-LOC B-LOC", 2),
        ("O I-ORG I-ORG", "iob2", "O B-ORG I-ORG", 1),
        ("B-PER I-LOC", "iob2", "B-PER B-LOC", 1),
        ("B-PER I-PER O", "iob2", "B-PER I-PER O", 0),
        ("PER PER O LOC ORG", "io", "B-PER I-PER O B-LOC B-ORG", 4),
        ("I-PER I-PER I-LOC", "io", "B-PER I-PER B-LOC", 2),
        (
            "B-PER E-PER S-LOC S-LOC O B-ORG I-ORG E-ORG",
            "bioes",
            "B-PER I-PER B-LOC B-LOC O B-ORG I-ORG I-ORG",
            4,
        ),
        ("U-LOC B-PER L-PER", "bioes", "B-LOC B-PER I-PER", 2),
        ("I-PER I-PER", "auto", "B-PER I-PER", 1),
        ("", "iob2", "", 0),
    ],
)
def test_to_iob2(tags, scheme, expected, changed):
    assert labels.to_iob2(tags.split(), scheme) == (expected.split(), changed)


@pytest.mark.parametrize(
    "tags,scheme,needle",
    [
        (["B-LOC", "X-LOC"], "iob2", "X-LOC"),
        (["S-LOC"], "iob2", "bioes"),
        (["LOC"], "iob1", "--tag_scheme io"),
        (["E-LOC"], "io", "E-LOC"),
    ],
)
def test_to_iob2_errors_name_the_tag(tags, scheme, needle):
    with pytest.raises(ValueError, match=needle):
        labels.to_iob2(tags, scheme)
    with pytest.raises(ValueError, match="not one of"):
        labels.to_iob2(["O"], "bilou")


@pytest.mark.parametrize(
    "name,scheme,repaired,keys",
    [
        ("tiny_iob1.conll", "iob1", 10, ["john", "mary", "un", "trains", "bank"]),
        ("tiny_bioes.conll", "bioes", 11, ["john", "mary", "un", "trains", "bank"]),
        ("tiny_io.conll", "io", 14, ["john", "mary", "un", "bank"]),
    ],
)
def test_convert_fixtures_auto(name, scheme, repaired, keys):
    original = _read(name)
    converted, report = labels.convert_sentences(original, "auto")
    assert report == {"scheme": scheme, "repaired": repaired}
    assert [" ".join(s.tags) for s in converted] == [EXPECTED_IOB2[k] for k in keys]
    assert [s.words for s in converted] == [s.words for s in original]
    assert [s.source for s in converted] == [s.source for s in original]


def test_convert_matches_iob2_train_file():
    train = _read("tiny_train.conll")
    bioes, _ = labels.convert_sentences(_read("tiny_bioes.conll"), "bioes")
    assert [s.tags for s in bioes[:3]] == [s.tags for s in train[:3]]
    same, report = labels.convert_sentences(train, "auto")
    assert same == train and report == {"scheme": "iob2", "repaired": 0}


def test_convert_keeps_unlabelled_sentences():
    sentence = data.Sentence(words=("a",), tags=None, source="u:1")
    converted, report = labels.convert_sentences([sentence], "auto")
    assert converted == [sentence] and report["repaired"] == 0


def test_convert_errors_name_source(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("a\tO\n\nb\tB-LOC\nc\tX-LOC\n")
    sentences = data.read_conll(str(path))
    for scheme in ("auto", "iob2"):
        with pytest.raises(data.DataError) as info:
            labels.convert_sentences(sentences, scheme)
        # The line of the bad tag itself, not of its sentence's first token.
        assert str(info.value).startswith(f"{path}:4: tag 'X-LOC' has unknown prefix X-; ")
    path.write_text("a\tB-LOC\n\nb\tS-LOC\n")
    with pytest.raises(data.DataError, match=r"bad\.conll:3: .*S-LOC.*; use --tag_scheme bioes"):
        labels.convert_sentences(data.read_conll(str(path)), "iob2")


# Tags that would parse by accident (as an IO type, a new type, ...): bad tag -> what the error
# says to write instead. Each sits on line 3 of a file whose other tags are good IOB2.
LOOK_ALIKE_TAGS = {
    "B-": "write B-TYPE", "I-": "write I-TYPE", "E-": "write E-TYPE", "S-": "write S-TYPE",
    "B-NEW TYPE": "write the type as one word, e.g. B-NEW_TYPE",
    "-": "write O outside entities", "_": "write O outside entities",
    "B-PER-": "write B-PER", "B--PER": "write B-PER", "B-:": "write B-TYPE",
    "b-per": "write B-per", "B_PER": "write B-PER", "I.LOC": "write I-LOC",
    "O-PER": "write O outside entities, B-PER/I-PER in them",
    "X-LOC": "use B-, I-, E-, S- or O", "B-B-PER": "write B-PER",
    "o": "write O (capital letter O)", "0": "write O (capital letter O)",
}


@pytest.mark.parametrize("tag", list(LOOK_ALIKE_TAGS))
@pytest.mark.parametrize("scheme", labels.SCHEMES)
def test_look_alike_tags_are_refused_at_their_line(tmp_path, tag, scheme):
    path = tmp_path / "train.conll"
    path.write_text(f"John\tB-PER\nSmith\tI-PER\n\nParis\t{tag}\nis\tO\n\n",
                    encoding="utf-8")
    with pytest.raises(data.DataError) as info:
        labels.convert_sentences(data.read_conll(str(path)), scheme)
    message = str(info.value)
    assert message.startswith(f"{path}:4: tag {tag!r} "), message
    assert "\n" not in message and LOOK_ALIKE_TAGS[tag] in message.split("; ", 1)[1], message


@pytest.mark.parametrize("scheme", ["auto", "io"])
def test_prefixes_without_hyphen_are_refused(tmp_path, scheme):
    path = tmp_path / "train.conll"
    path.write_text("a\tO\n\nJohn\tBPER\nSmith\tIPER\n\n", encoding="utf-8")
    with pytest.raises(data.DataError, match=rf"{path}:3: tags 'BPER' and 'IPER' look like "
                                             r"B-/I- prefixes .*; write B-PER and I-PER"):
        labels.convert_sentences(data.read_conll(str(path)), scheme)
    # One bare type that happens to start with B is an IO type like any other.
    path.write_text("a\tO\n\nBerlin\tBLOC\nMitte\tBLOC\n\n", encoding="utf-8")
    converted, report = labels.convert_sentences(data.read_conll(str(path)), scheme)
    assert report["scheme"] == "io" and converted[1].tags == ("B-BLOC", "I-BLOC")


def test_accepted_on_purpose():
    # Inner hyphens and underscores are parts of a type; IOB and BIOES tags mixed in one file
    # read as BIOES (B-/I- mean the same in both), which converts both halves correctly.
    sentences = [data.Sentence(("a", "b"), ("B-PER-DERIV", "I-PER-DERIV"), source="f:1"),
                 data.Sentence(("c", "d", "e"), ("B-WORK_OF_ART", "O", "S-LOC"), source="f:4"),
                 data.Sentence(("f", "g"), ("B-LOC", "E-LOC"), source="f:8")]
    converted, report = labels.convert_sentences(sentences, "auto")
    assert report["scheme"] == "bioes"
    assert [s.tags for s in converted] == [("B-PER-DERIV", "I-PER-DERIV"),
                                           ("B-WORK_OF_ART", "O", "B-LOC"), ("B-LOC", "I-LOC")]


def test_mixed_prefixed_and_bare_tags_name_the_bare_one(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("John\tB-PER\n\nParis\tLOC\n\n", encoding="utf-8")
    with pytest.raises(data.DataError, match=rf"{path}:3: tag 'LOC' has no B-/I- prefix; "
                                             r"use --tag_scheme io"):
        labels.convert_sentences(data.read_conll(str(path)), "auto")


def test_label_list_and_entity_types():
    train = _read("tiny_train.conll")
    assert labels.label_list(train) == DATA_LABELS
    only_b = [data.Sentence(words=("x",), tags=("B-MISC",))]
    assert labels.label_list(only_b) == ["O", "B-MISC", "I-MISC"]
    assert labels.entity_types(DATA_LABELS) == ["LOC", "ORG", "PER"]
    assert labels.entity_types(IO_TEACHER) == ["LOC", "ORG", "PER"]
    with pytest.raises(data.DataError, match="f:7: tag 'S-LOC' is not IOB2"):
        labels.label_list([data.Sentence(words=("x",), tags=("S-LOC",), source="f:7")])


def test_check_labels_known(tmp_path):
    train_labels = labels.label_list(_read("tiny_train.conll"))
    for name in ("tiny_dev.conll", "tiny_test.conll", "tiny_xtreme.tsv"):
        labels.check_labels_known(_read(name), train_labels, "dev")
    path = tmp_path / "dev.conll"
    path.write_text("a\tO\n\nb\tB-FOO\n")
    with pytest.raises(data.DataError) as info:
        labels.check_labels_known(data.read_conll(str(path)), train_labels, "dev")
    assert str(info.value).startswith(
        f"{path}:3: tag B-FOO in dev is not in the training labels (O B-LOC"
    )
