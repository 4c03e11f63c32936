"""Tests for xtremedistil_tf.teacher_labels: a ready teacher's labels feeding the data's."""

import numpy as np
import pytest

from xtremedistil_tf import labels, teacher_labels

DATA_LABELS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
IO_TEACHER = ["LOC", "ORG", "PER", "O"]  # e.g. jplu/tf-xlm-r-ner-40-lang
# dslim/bert-base-NER order: an IOB teacher with a type (MISC) the data does not have.
IOB_TEACHER = ["O", "B-MISC", "I-MISC", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]


def test_map_teacher_labels_io_and_iob():
    io = teacher_labels.map_teacher_labels(IO_TEACHER, DATA_LABELS)
    np.testing.assert_array_equal(io, [3, 0, 0, 1, 1, 2, 2])
    iob = teacher_labels.map_teacher_labels(IOB_TEACHER, DATA_LABELS)
    np.testing.assert_array_equal(iob, [0, 7, 8, 5, 6, 3, 4])


def test_map_teacher_labels_aliases_and_case():
    teacher = ["o", "B-PERSON", "I-PERSON", "B-Location", "I-Location"]
    data_labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    np.testing.assert_array_equal(
        teacher_labels.map_teacher_labels(teacher, data_labels), [0, 3, 4, 1, 2]
    )
    np.testing.assert_array_equal(
        teacher_labels.map_teacher_labels(["per", "O"], ["O", "B-PERSON", "I-PERSON"]), [1, 0, 0]
    )


def test_map_teacher_labels_missing_type():
    with pytest.raises(ValueError) as info:
        teacher_labels.map_teacher_labels(["LOC", "PER", "O"], DATA_LABELS)
    assert "ORG" in str(info.value) and "['LOC', 'PER', 'O']" in str(info.value)
    with pytest.raises(ValueError, match="no 'O' label"):
        teacher_labels.map_teacher_labels(["LOC", "PER"], DATA_LABELS)


def test_io_teacher_probs_hand_computed():
    # Columns: LOC ORG PER O. Argmax per word: PER, PER, LOC.
    probs = np.array(
        [
            [0.1, 0.1, 0.7, 0.1],
            [0.2, 0.0, 0.6, 0.2],
            [0.5, 0.0, 0.1, 0.4],
        ]
    )
    out = teacher_labels.teacher_probs_to_data(probs, IO_TEACHER, DATA_LABELS)
    # Columns: O B-LOC I-LOC B-ORG I-ORG B-PER I-PER.
    expected = [
        [0.1, 0.1, 0.0, 0.1, 0.0, 0.7, 0.0],  # first word: everything starts an entity
        [0.2, 0.2, 0.0, 0.0, 0.0, 0.0, 0.6],  # previous argmax PER: PER mass continues
        [0.4, 0.5, 0.0, 0.0, 0.0, 0.0, 0.1],  # previous argmax PER: LOC starts, PER continues
    ]
    assert out.shape == (3, 7) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)


def test_iob_teacher_probs_unknown_type_goes_to_o():
    probs = np.zeros((2, len(IOB_TEACHER)))
    probs[0, [0, 1, 3]] = [0.2, 0.3, 0.5]  # O, B-MISC, B-PER
    probs[1, [2, 4, 8]] = [0.25, 0.25, 0.5]  # I-MISC, I-PER, I-LOC
    out = teacher_labels.teacher_probs_to_data(probs, IOB_TEACHER, DATA_LABELS)
    expected = [
        [0.5, 0, 0, 0, 0, 0.5, 0],
        [0.25, 0, 0.5, 0, 0, 0, 0.25],
    ]
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_teacher_probs_renormalise_and_shape_check():
    probs = np.array([[2.0, 0.0, 0.0, 2.0]])  # not normalised
    out = teacher_labels.teacher_probs_to_data(probs, IO_TEACHER, DATA_LABELS)
    np.testing.assert_allclose(out, [[0.5, 0.5, 0, 0, 0, 0, 0]], atol=1e-6)
    with pytest.raises(ValueError, match="expected"):
        teacher_labels.teacher_probs_to_data(np.ones((2, 3)), IO_TEACHER, DATA_LABELS)


@pytest.mark.parametrize("teacher", [IO_TEACHER, IOB_TEACHER[:1] + IOB_TEACHER[3:]])
def test_probs_argmax_agrees_with_tags_from_teacher(teacher):
    # Independent paths: converting distributions then taking argmax must give the same tags as
    # taking the teacher argmax then converting tags (all teacher types exist in the data here).
    rng = np.random.default_rng(0)
    for _ in range(20):
        probs = rng.dirichlet(np.full(len(teacher), 0.3), size=8)
        out = teacher_labels.teacher_probs_to_data(probs, teacher, DATA_LABELS)
        from_probs = [DATA_LABELS[i] for i in out.argmax(axis=1)]
        from_ids = teacher_labels.tags_from_teacher(probs.argmax(axis=1), teacher, DATA_LABELS)
        if teacher is IO_TEACHER:
            assert from_probs == from_ids
        else:
            # IOB teacher mass maps one to one; tags_from_teacher additionally repairs I- starts.
            assert labels.to_iob2(from_probs, "iob2")[0] == from_ids


def test_tags_from_teacher():
    assert teacher_labels.tags_from_teacher([2, 2, 3, 0, 0, 1], IO_TEACHER) == [
        "B-PER", "I-PER", "O", "B-LOC", "I-LOC", "B-ORG",
    ]
    ids = [3, 4, 0, 1, 2]
    assert teacher_labels.tags_from_teacher(ids, IOB_TEACHER) == [
        "B-PER", "I-PER", "O", "B-MISC", "I-MISC",
    ]
    assert teacher_labels.tags_from_teacher(ids, IOB_TEACHER, DATA_LABELS) == [
        "B-PER", "I-PER", "O", "O", "O",
    ]
    teacher = ["O", "B-PERSON", "I-PERSON"]
    data_labels = ["O", "B-PER", "I-PER"]
    assert teacher_labels.tags_from_teacher([2, 2], teacher, data_labels) == ["B-PER", "I-PER"]
