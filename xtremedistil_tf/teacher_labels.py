"""A ready-made teacher's labels and the data's: which teacher label feeds which data label.

`map_teacher_labels` and `teacher_probs_to_data` let a token-classification teacher with its own
label names (e.g. the IO names "PER", "LOC" of `jplu/tf-xlm-r-ner-40-lang`) feed the data's IOB2
labels; `tags_from_teacher` turns its argmax into IOB2 tags.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xtremedistil_tf.labels import OUTSIDE, entity_types, split_tag, to_iob2

_TYPE_ALIASES = {
    "PERSON": "PER",
    "LOCATION": "LOC",
    "ORGANIZATION": "ORG",
    "ORGANISATION": "ORG",
    "MISCELLANEOUS": "MISC",
}


def canonical_type(entity_type: str) -> str:
    """Upper-cases a type and resolves aliases: "person" -> "PER", "Location" -> "LOC"."""
    upper = entity_type.upper()
    return _TYPE_ALIASES.get(upper, upper)


def _teacher_index(teacher_labels: Sequence[str]) -> tuple[dict[tuple[str, str], int], bool]:
    """Maps (prefix, canonical type) -> teacher index; prefix "" for IO labels. Also: is IOB?"""
    parts = [split_tag(_normalise_outside(label)) for label in teacher_labels]
    is_iob = any(prefix == "B" for prefix, _ in parts)
    index: dict[tuple[str, str], int] = {}
    for k, (prefix, entity_type) in enumerate(parts):
        key_prefix = prefix if is_iob or prefix == OUTSIDE else ""
        index.setdefault((key_prefix, canonical_type(entity_type)), k)
    if (OUTSIDE, "") not in index:
        raise ValueError(f"teacher labels {list(teacher_labels)} have no 'O' label")
    return index, is_iob


def map_teacher_labels(teacher_labels: Sequence[str], data_labels: Sequence[str]) -> np.ndarray:
    """For each data label, the index of the teacher label whose probability feeds it.

    An IO teacher (no B- labels, e.g. ["LOC", "ORG", "PER", "O"]) feeds both B-X and I-X from X;
    an IOB teacher feeds B-X from B-X and I-X from I-X (from B-X if it has no I-X). Types match
    case-insensitively and through aliases (PER=PERSON, LOC=LOCATION, ORG=ORGANIZATION,
    MISC=MISCELLANEOUS).

    Args:
      teacher_labels: the teacher's label names, in its output order.
      data_labels: the data's IOB2 labels (e.g. from `label_list`).

    Returns:
      int64 array of shape [len(data_labels)].

    Raises:
      ValueError: a data type the teacher cannot produce, naming it and listing the teacher labels.
    """
    index, is_iob = _teacher_index(teacher_labels)
    mapping = np.zeros(len(data_labels), dtype=np.int64)
    for d, label in enumerate(data_labels):
        prefix, entity_type = split_tag(label)
        key_type = canonical_type(entity_type)
        if prefix == OUTSIDE:
            mapping[d] = index[(OUTSIDE, "")]
            continue
        candidates = [(prefix, key_type), ("B", key_type)] if is_iob else [("", key_type)]
        found = [index[c] for c in candidates if c in index]
        if not found:
            raise ValueError(
                f"data label {label} (type {entity_type}) has no teacher label; the teacher has "
                f"{list(teacher_labels)}: add --teacher_new_head (keeps the teacher's encoder, "
                f"fine-tunes a new head on the data's labels) or choose a teacher that knows "
                f"{entity_type}"
            )
        mapping[d] = found[0]
    return mapping


def teacher_probs_to_data(
    probs: np.ndarray, teacher_labels: Sequence[str], data_labels: Sequence[str]
) -> np.ndarray:
    """Turns a teacher's word probabilities for ONE sentence into a distribution over data labels.

    IO teacher: the mass of type X goes to I-X when the previous word's argmax teacher label is X,
    else to B-X. IOB teacher: each teacher label's mass goes to the data label it maps to. Mass of
    teacher types the data does not have (e.g. MISC for WikiANN) goes to "O", because such
    entities are tagged O in the data. Rows are then renormalised.

    Args:
      probs: [W, Kt] teacher probabilities for the words of one sentence, in order.
      teacher_labels: Kt teacher label names.
      data_labels: Kd data IOB2 labels.

    Returns:
      float32 array [W, Kd] whose rows sum to 1.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(teacher_labels):
        raise ValueError(f"probs has shape {probs.shape}, expected [words, {len(teacher_labels)}]")
    mapping = map_teacher_labels(teacher_labels, data_labels)
    _, is_iob = _teacher_index(teacher_labels)
    if is_iob:
        out = probs @ _transfer_matrix(mapping, teacher_labels, data_labels)
    else:
        out = _io_to_iob2(probs, mapping, teacher_labels, data_labels)
    totals = out.sum(axis=1, keepdims=True)
    return (out / np.where(totals > 0, totals, 1.0)).astype(np.float32)


def _transfer_matrix(
    mapping: np.ndarray, teacher_labels: Sequence[str], data_labels: Sequence[str]
) -> np.ndarray:
    """[Kt, Kd] 0/1 matrix sending each teacher label to exactly one data label (default "O")."""
    outside = data_labels.index(OUTSIDE)
    matrix = np.zeros((len(teacher_labels), len(data_labels)))
    matrix[:, outside] = 1.0
    for d, k in enumerate(mapping):
        if d != outside and matrix[k, outside] == 1.0:
            matrix[k, outside] = 0.0
            matrix[k, d] = 1.0
    return matrix


def _io_to_iob2(
    probs: np.ndarray,
    mapping: np.ndarray,
    teacher_labels: Sequence[str],
    data_labels: Sequence[str],
) -> np.ndarray:
    """IO teacher mass -> B-X or I-X by whether the previous word's argmax teacher label is X."""
    outside = data_labels.index(OUTSIDE)
    previous = np.concatenate([[-1], probs.argmax(axis=1)[:-1]])
    out = np.zeros((probs.shape[0], len(data_labels)))
    used = set()
    for d, label in enumerate(data_labels):
        k = mapping[d]
        if d == outside:
            continue
        continues = previous == k
        wanted = continues if label.startswith("I-") else ~continues
        out[:, d] = np.where(wanted, probs[:, k], 0.0)
        used.add(int(k))
    unused = [k for k in range(len(teacher_labels)) if k not in used]
    out[:, outside] = probs[:, unused].sum(axis=1)
    return out


def tags_from_teacher(
    pred_ids: Sequence[int],
    teacher_labels: Sequence[str],
    data_labels: Sequence[str] | None = None,
) -> list[str]:
    """Teacher argmax ids of one sentence -> IOB2 tags.

    Args:
      pred_ids: teacher label index per word.
      teacher_labels: the teacher's label names.
      data_labels: when given, types are renamed to the data's (PERSON -> PER) and types the data
        does not have become "O".

    Returns:
      IOB2 tags, one per word.
    """
    _, is_iob = _teacher_index(teacher_labels)
    names = {}
    if data_labels is not None:
        names = {canonical_type(t): t for t in entity_types(data_labels)}
    tags = []
    for k in pred_ids:
        prefix, entity_type = split_tag(_normalise_outside(teacher_labels[int(k)]))
        unknown = data_labels is not None and canonical_type(entity_type) not in names
        if prefix == OUTSIDE or unknown:
            tags.append(OUTSIDE)
            continue
        name = names.get(canonical_type(entity_type), entity_type)
        tags.append(f"{prefix}-{name}" if prefix else name)
    return to_iob2(tags, "iob2" if is_iob else "io")[0]


def _normalise_outside(label: str) -> str:
    return OUTSIDE if label.upper() == OUTSIDE else label
