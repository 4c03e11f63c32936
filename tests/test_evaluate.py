"""Tests for xtremedistil_tf.evaluate against scores computed by hand."""

import warnings

import pytest

from xtremedistil_tf import evaluate

# Gold: PER(s0 0-2), LOC(s0 3), ORG(s1 0-2) = 3 entities.
# Pred: PER correct, ORG at s0 3 (wrong type), ORG(s1 0-2) correct, LOC at s1 2 (spurious).
GOLD = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "I-ORG", "O"]]
PRED = [["B-PER", "I-PER", "O", "B-ORG", "O"], ["B-ORG", "I-ORG", "B-LOC"]]


def _f1(p, r):
    return 2 * p * r / (p + r) if p + r else 0.0


def test_micro_scores_by_hand():
    scores = evaluate.score_tags(GOLD, PRED)
    # 2 true positives, 4 predicted entities, 3 gold entities.
    assert scores["precision"] == pytest.approx(2 / 4)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(_f1(2 / 4, 2 / 3))
    assert scores["sentences"] == 2
    assert scores["words"] == 8


def test_token_accuracies_by_hand():
    scores = evaluate.score_tags(GOLD, PRED)
    # Wrong words: s0 position 3 (B-LOC vs B-ORG) and s1 position 2 (O vs B-LOC).
    assert scores["accuracy"] == pytest.approx(6 / 8)
    # Gold non-O words: s0 0,1,3 and s1 0,1; only s0 position 3 is wrong.
    assert scores["accuracy_non_o"] == pytest.approx(4 / 5)


def test_per_type_scores_and_support():
    per_type = evaluate.score_tags(GOLD, PRED)["per_type"]
    assert set(per_type) == {"PER", "LOC", "ORG"}
    assert per_type["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert per_type["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert per_type["ORG"]["precision"] == pytest.approx(1 / 2)
    assert per_type["ORG"]["recall"] == pytest.approx(1.0)
    assert per_type["ORG"]["f1"] == pytest.approx(2 / 3)
    assert isinstance(per_type["ORG"]["support"], int)


def test_macro_vs_weighted_f1():
    # Three PER found, the only LOC missed: PER f1 1 (support 3), LOC f1 0 (support 1).
    gold = [["B-PER", "O", "B-PER"], ["B-PER", "B-LOC"]]
    pred = [["B-PER", "O", "B-PER"], ["B-PER", "O"]]
    scores = evaluate.score_tags(gold, pred)
    assert scores["macro_f1"] == pytest.approx(0.5)
    assert scores["weighted_f1"] == pytest.approx(0.75)
    assert scores["f1"] == pytest.approx(_f1(1.0, 3 / 4))
    assert scores["per_type"]["PER"]["support"] == 3


def test_strict_mode_ignores_entity_starting_with_inside_tag():
    # Lenient (conlleval) scoring would accept I-PER I-PER as the PER entity; strict does not.
    scores = evaluate.score_tags([["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]])
    assert scores["precision"] == 0.0
    assert scores["recall"] == 0.0
    assert scores["f1"] == 0.0
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert scores["accuracy_non_o"] == pytest.approx(1 / 2)


def test_strict_mode_needs_matching_type_inside_span():
    # B-PER I-LOC is a one-word PER entity in strict IOB2, not the two-word gold span.
    scores = evaluate.score_tags([["B-PER", "I-PER"]], [["B-PER", "I-LOC"]])
    assert scores["precision"] == 0.0
    assert scores["recall"] == 0.0


@pytest.mark.parametrize(
    "gold, pred",
    [([["O", "O"]], [["O", "O"]]), ([], []), ([[]], [[]])],
    ids=["no-entities", "no-sentences", "empty-sentence"],
)
def test_nothing_to_count_gives_zeros_without_warnings(gold, pred):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = evaluate.score_tags(gold, pred)
    for key in ("f1", "precision", "recall", "macro_f1", "weighted_f1", "accuracy_non_o"):
        assert scores[key] == 0.0, key
    assert scores["per_type"] == {}
    assert scores["sentences"] == len(gold)


def test_only_predicted_entities_give_zero_precision_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = evaluate.score_tags([["O", "O"]], [["B-PER", "O"]])
    assert scores["precision"] == 0.0
    assert scores["per_type"]["PER"]["support"] == 0


def test_length_mismatch_names_the_sentence():
    with pytest.raises(ValueError, match="sentence 1"):
        evaluate.score_tags(GOLD, [PRED[0], PRED[1][:-1]])
    with pytest.raises(ValueError, match="sentences"):
        evaluate.score_tags(GOLD, PRED[:1])
    with pytest.raises(ValueError, match="langs"):
        evaluate.score_tags(GOLD, PRED, langs=["en"])


def test_per_language_split():
    scores = evaluate.score_tags(GOLD, PRED, langs=["en", "de"])
    en, de = scores["per_language"]["en"], scores["per_language"]["de"]
    # en: gold PER, LOC; pred PER, ORG -> 1 of 2 each way.
    assert (en["precision"], en["recall"], en["sentences"]) == (0.5, 0.5, 1)
    assert en["f1"] == pytest.approx(0.5)
    # de: gold ORG; pred ORG, LOC.
    assert (de["precision"], de["recall"], de["sentences"]) == (0.5, 1.0, 1)
    assert de["f1"] == pytest.approx(2 / 3)
    assert set(en) == {"f1", "precision", "recall", "sentences"}


def test_per_language_none_handling():
    assert "per_language" not in evaluate.score_tags(GOLD, PRED)
    assert "per_language" not in evaluate.score_tags(GOLD, PRED, langs=[None, None])
    mixed = evaluate.score_tags(GOLD, PRED, langs=["en", None])["per_language"]
    assert mixed["unknown"]["sentences"] == 1


def test_output_keys_and_plain_python_types():
    scores = evaluate.score_tags(GOLD, PRED, langs=["en", "de"])
    assert set(scores) == {
        "f1", "precision", "recall", "macro_f1", "weighted_f1", "accuracy", "accuracy_non_o",
        "per_type", "per_language", "sentences", "words",
    }  # fmt: skip
    # Plain floats so results can go straight into json.dump.
    assert type(scores["f1"]) is float
    assert type(scores["per_type"]["PER"]["f1"]) is float


def test_format_comparison():
    rows = {
        "teacher": {
            "f1": 0.91234, "precision": 0.9, "recall": 0.8249, "accuracy_non_o": 0.95,
            "dev_f1": 0.8811, "params": 22_713_216, "size_mb": 86.66, "ms_per_batch": 41.0,
        },
        "student": {
            "f1": 0.8, "precision": 0.81, "recall": 0.79, "accuracy_non_o": 0.9,
            "params": 4_386_000, "size_mb": 16.73, "ms_per_batch": 20.0,
        },
        "tiny": {"f1": 0.5, "params": 12_345, "ms_per_batch": 4.1},
    }  # fmt: skip
    lines = evaluate.format_comparison(rows).splitlines()
    assert lines[0].startswith("| model | F1 | P | R |")
    assert lines[0].endswith("| speed-up |")
    assert lines[2] == (
        "| teacher | 0.912 | 0.900 | 0.825 | 0.950 | 0.881 | 22.7M | 86.7 | 41.0 | 1.00x |")
    assert lines[3] == (
        "| student | 0.800 | 0.810 | 0.790 | 0.900 | - | 4.4M | 16.7 | 20.0 | 2.05x |")
    assert lines[4] == "| tiny | 0.500 | - | - | - | - | 12.3K | - | 4.1 | 10.00x |"
    assert len(lines) == 5


def test_format_comparison_without_teacher_has_no_speedup():
    table = evaluate.format_comparison({"student": {"f1": 0.8, "ms_per_batch": 20.0}})
    assert table.splitlines()[2].endswith("| 20.0 | - |")
