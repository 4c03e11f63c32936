"""Entity-level and token-level scores for IOB2 tag sequences, and the comparison table.

Entity scores are seqeval's strict mode with the IOB2 scheme: an entity counts only when it starts
with ``B-`` and its type and span match exactly, so a prediction that opens with ``I-`` is no entity
at all (conlleval's lenient mode would repair it into one).
"""

from __future__ import annotations

from collections.abc import Sequence

from seqeval import metrics as seqeval_metrics
from seqeval import scheme as seqeval_scheme

_OUTSIDE = "O"
# Sentences whose language is None are scored under this key so no sentence is left out.
UNKNOWN_LANGUAGE = "unknown"
TEACHER_ROW = "teacher"


def _check_lengths(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> None:
    """Raises ValueError when the corpora or any sentence pair differ in length."""
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} sentences but pred has {len(pred)}")
    for index, (gold_tags, pred_tags) in enumerate(zip(gold, pred, strict=True)):
        if len(gold_tags) != len(pred_tags):
            raise ValueError(
                f"sentence {index}: gold has {len(gold_tags)} tags but pred has {len(pred_tags)}"
            )


def _count_entities(sentences: Sequence[Sequence[str]]) -> int:
    """Number of strict-mode IOB2 entities in ``sentences``."""
    entities = seqeval_scheme.Entities(
        [list(tags) for tags in sentences], seqeval_scheme.IOB2, suffix=False
    )
    return sum(len(sentence_entities) for sentence_entities in entities.entities)


def _entity_report(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """seqeval's strict classification report, or an empty one when there are no entities.

    seqeval averages over an empty array (RuntimeWarning) and rejects an empty corpus
    (TypeError), so both degenerate cases are answered here with zeros instead.
    """
    if not gold or (_count_entities(gold) == 0 and _count_entities(pred) == 0):
        zeros = {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0}
        return {"micro avg": zeros, "macro avg": zeros, "weighted avg": zeros}
    return seqeval_metrics.classification_report(
        [list(tags) for tags in gold],
        [list(tags) for tags in pred],
        mode="strict",
        scheme=seqeval_scheme.IOB2,
        output_dict=True,
        zero_division=0,
    )


def _token_accuracies(
    gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]
) -> tuple[float, float, int]:
    """Returns (accuracy over all words, accuracy over words with gold tag != O, word count)."""
    words = correct = non_o = non_o_correct = 0
    for gold_tags, pred_tags in zip(gold, pred, strict=True):
        for gold_tag, pred_tag in zip(gold_tags, pred_tags, strict=True):
            words += 1
            correct += gold_tag == pred_tag
            if gold_tag != _OUTSIDE:
                non_o += 1
                non_o_correct += gold_tag == pred_tag
    accuracy = correct / words if words else 0.0
    accuracy_non_o = non_o_correct / non_o if non_o else 0.0
    return accuracy, accuracy_non_o, words


def _entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """Micro P/R/F1, macro and weighted F1 and per-type scores, as plain Python numbers."""
    report = _entity_report(gold, pred)
    averages = ("micro avg", "macro avg", "weighted avg")
    per_type = {
        name: {
            "precision": float(row["precision"]),
            "recall": float(row["recall"]),
            "f1": float(row["f1-score"]),
            "support": int(row["support"]),
        }
        for name, row in sorted(report.items())
        if name not in averages
    }
    return {
        "f1": float(report["micro avg"]["f1-score"]),
        "precision": float(report["micro avg"]["precision"]),
        "recall": float(report["micro avg"]["recall"]),
        "macro_f1": float(report["macro avg"]["f1-score"]),
        "weighted_f1": float(report["weighted avg"]["f1-score"]),
        "per_type": per_type,
    }


def _per_language(
    gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], langs: Sequence[str | None]
) -> dict:
    """Micro entity P/R/F1 and sentence count for each language, None grouped as 'unknown'."""
    groups: dict[str, list[int]] = {}
    for index, lang in enumerate(langs):
        groups.setdefault(UNKNOWN_LANGUAGE if lang is None else lang, []).append(index)
    result = {}
    for lang, indices in sorted(groups.items()):
        scores = _entity_scores([gold[i] for i in indices], [pred[i] for i in indices])
        result[lang] = {
            "f1": scores["f1"],
            "precision": scores["precision"],
            "recall": scores["recall"],
            "sentences": len(indices),
        }
    return result


def score_tags(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    langs: Sequence[str | None] | None = None,
) -> dict:
    """Scores predicted IOB2 tags against gold tags, one tag per word.

    Args:
        gold: Gold tags, one list per sentence, e.g. ``[["B-PER", "I-PER", "O"], ...]``.
        pred: Predicted tags, same shape as ``gold``.
        langs: Optional language of each sentence; when given and not all None, scores are also
            split by language (None is reported as ``"unknown"``).

    Returns:
        ``{"f1", "precision", "recall"}``: seqeval strict IOB2 micro averages over entities;
        ``"macro_f1"``, ``"weighted_f1"``: F1 averaged over entity types (types seen in gold or
        pred), unweighted or weighted by gold support; ``"accuracy"``: token accuracy;
        ``"accuracy_non_o"``: token accuracy over words whose gold tag is not ``O``;
        ``"per_type"``: ``{type: {"precision", "recall", "f1", "support"}}`` with support the
        number of gold entities; ``"per_language"`` (only with ``langs``):
        ``{lang: {"f1", "precision", "recall", "sentences"}}``; ``"sentences"``, ``"words"``.
        Scores with nothing to count are 0.0.

    Raises:
        ValueError: If the corpora, any sentence pair, or ``langs`` differ in length.
    """
    _check_lengths(gold, pred)
    if langs is not None and len(langs) != len(gold):
        raise ValueError(f"langs has {len(langs)} entries but there are {len(gold)} sentences")
    accuracy, accuracy_non_o, words = _token_accuracies(gold, pred)
    result = _entity_scores(gold, pred)
    result.update(accuracy=accuracy, accuracy_non_o=accuracy_non_o)
    if langs is not None and any(lang is not None for lang in langs):
        result["per_language"] = _per_language(gold, pred, langs)
    result.update(sentences=len(gold), words=words)
    return result


def _format_params(count: float) -> str:
    """22_700_000 -> '22.7M'; thousands as 'K' so tiny test models stay readable."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.1f}{suffix}"
    return str(int(count))


def _cell(row: dict, key: str, fmt: str) -> str:
    """Formats ``row[key]`` with ``fmt``, or '-' when the value is missing."""
    value = row.get(key)
    return "-" if value is None else format(value, fmt)


def _speedup(row: dict, teacher_ms: float | None) -> str:
    """Teacher latency divided by this row's latency, e.g. '2.05x'."""
    ms = row.get("ms_per_batch")
    if teacher_ms is None or not ms:
        return "-"
    return f"{teacher_ms / ms:.2f}x"


def format_comparison(rows: dict[str, dict]) -> str:
    """Renders a markdown table comparing models, e.g. a teacher and its students.

    Args:
        rows: ``{name: {"f1", "precision", "recall", "accuracy_non_o", "dev_f1", "params",
            "size_mb", "ms_per_batch"}}`` in display order; a missing value is shown as ``-``.
            The speed-up column is relative to the row named ``"teacher"`` (teacher ms / row ms)
            and is ``-`` when there is no such row.

    Returns:
        The table, one line per row, ending with a newline.
    """
    teacher_ms = rows.get(TEACHER_ROW, {}).get("ms_per_batch")
    lines = [
        "| model | F1 | P | R | acc (non-O) | dev F1 | params | size (MB) | ms/batch | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        params = row.get("params")
        cells = [
            name,
            _cell(row, "f1", ".3f"),
            _cell(row, "precision", ".3f"),
            _cell(row, "recall", ".3f"),
            _cell(row, "accuracy_non_o", ".3f"),
            _cell(row, "dev_f1", ".3f"),
            "-" if params is None else _format_params(params),
            _cell(row, "size_mb", ".1f"),
            _cell(row, "ms_per_batch", ".1f"),
            _speedup(row, teacher_ms),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
