"""Tag schemes, label sets and the mapping between a ready-made teacher's labels and the data's.

Inside the package every tag sequence is IOB2 ("B-X" starts an entity, "I-X" continues it, "O").
`convert_sentences` brings IOB1, IO and BIOES data to IOB2; `label_list` builds the label set from
the training data; `map_teacher_labels` and `teacher_probs_to_data` let a token-classification
teacher with its own label names (e.g. IO names "PER", "LOC") feed the data's IOB2 labels.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

import numpy as np

from xtremedistil_tf import data

SCHEMES = ("auto", "iob1", "iob2", "io", "bioes")
OUTSIDE = "O"

# One-letter prefix, a hyphen, then the type. Anything else except "O" is a bare type ("LOC").
_PREFIXED = re.compile(r"([A-Za-z])-(.+)")
_KNOWN_PREFIXES = frozenset("BIESLU")
# L-/U- (BILOU) are the same as E-/S- (BIOES).
_BIOES_ONLY = frozenset("ESLU")
_TYPE_ALIASES = {
    "PERSON": "PER",
    "LOCATION": "LOC",
    "ORGANIZATION": "ORG",
    "ORGANISATION": "ORG",
    "MISCELLANEOUS": "MISC",
}


def split_tag(tag: str) -> tuple[str, str]:
    """Splits a tag into (prefix, type).

    "B-LOC" -> ("B", "LOC"); a bare type "LOC" -> ("", "LOC"); "O" -> ("O", "").
    Types may hold inner hyphens ("I-PER-DERIV") but not spaces.

    Raises:
      ValueError: a tag that only looks like a tag: see `malformed_tag` (the message is
        "<problem>; <what to write instead>").
    """
    if tag == OUTSIDE:
        return OUTSIDE, ""
    problem = malformed_tag(tag)
    if problem:
        raise ValueError(problem)
    match = _PREFIXED.fullmatch(tag)
    if match is None:
        return "", tag
    return match.group(1), match.group(2)


def malformed_tag(tag: str) -> str | None:
    """Why `tag` is not a usable tag ("<problem>; <fix>"), or None when it is one.

    Refused, because each would otherwise parse as something else: an empty type ("B-", "S-");
    a type with a space ("B-NEW TYPE"); no letter or digit ("-", "_"); a stray hyphen around
    the type ("B-PER-", "B--PER"); a prefix other than B, I, E, S, L, U ("X-LOC", "O-PER") or in
    lower case ("b-per"); a prefix joined by "_", "." or ":" ("B_PER"); "o" or "0" for "O".
    (A bare "BPER" next to "IPER" is a corpus-level check: `convert_sentences`.)
    """
    if tag == OUTSIDE:
        return None
    if tag in ("o", "0"):
        return f"tag {tag!r} is not the outside tag; write O (capital letter O)"
    if any(c.isspace() for c in tag):
        return (f"tag {tag!r} contains a space; write the type as one word, e.g. "
                f"{'_'.join(tag.split())}")
    if not any(c.isalnum() for c in tag):
        return f"tag {tag!r} names no type; write O outside entities, B-TYPE/I-TYPE in them"
    match = _PREFIXED.fullmatch(tag) or re.fullmatch(r"([A-Za-z])-()", tag)
    if match is None:
        joined = re.fullmatch(r"([BIESLUbieslu])[_.:](\w.*)", tag)
        if joined:
            return (f"tag {tag!r} joins its prefix with {tag[1]!r}; write "
                    f"{joined.group(1).upper()}-{joined.group(2)}")
        return None
    prefix, entity_type = match.groups()
    if not entity_type:
        return f"tag {tag!r} has no type after {prefix}-; write {prefix.upper()}-TYPE, e.g. " \
               f"{prefix.upper()}-PER"
    if prefix not in _KNOWN_PREFIXES:
        if prefix.upper() in _KNOWN_PREFIXES:
            return (f"tag {tag!r} has a lower-case prefix {prefix}-; write "
                    f"{prefix.upper()}-{entity_type}")
        if prefix in "Oo":
            return (f"tag {tag!r} gives O a type; write O outside entities, "
                    f"B-{entity_type}/I-{entity_type} in them")
        return f"tag {tag!r} has unknown prefix {prefix}-; use B-, I-, E-, S- or O"
    if entity_type.startswith("-") or entity_type.endswith("-"):
        return (f"tag {tag!r} has a stray '-' in its type {entity_type!r}; write "
                f"{prefix}-{entity_type.strip('-')}")
    if not any(c.isalnum() for c in entity_type):
        return f"tag {tag!r} has no letter or digit in its type; write {prefix}-TYPE, e.g. " \
               f"{prefix}-PER"
    if re.match(r"[BIESLU]-", entity_type):
        return f"tag {tag!r} has two prefixes; write {prefix}-{entity_type[2:]}"
    return None


def detect_scheme(tag_sequences: Iterable[Sequence[str]]) -> str:
    """Guesses the tag scheme of a corpus.

    Rules, in order: "bioes" if any tag has an E-/S-/L-/U- prefix; "io" if no tag has a B- prefix
    (bare types such as "LOC", or only I- tags); "iob1" if some I-X starts an entity (the previous
    tag is not B-X or I-X); otherwise "iob2".

    Args:
      tag_sequences: the tag sequences of all sentences.

    Returns:
      One of "iob1", "iob2", "io", "bioes".
    """
    has_b = i_starts = False
    for tags in tag_sequences:
        previous_type = ""
        for tag in tags:
            prefix, entity_type = split_tag(tag)
            if prefix in _BIOES_ONLY:
                return "bioes"
            has_b = has_b or prefix == "B"
            i_starts = i_starts or (prefix == "I" and entity_type != previous_type)
            previous_type = entity_type if prefix in ("B", "I") else ""
    if not has_b:
        return "io"
    return "iob1" if i_starts else "iob2"


def to_iob2(tags: Sequence[str], scheme: str) -> tuple[list[str], int]:
    """Converts one tag sequence to IOB2.

    iob1/iob2: an I-X that starts an entity becomes B-X. io: runs of the same type ("LOC" or
    "I-LOC") become B-X I-X ...; "O" stays. bioes: S-X -> B-X, E-X -> I-X (U-/L- likewise), and
    an I-/E- that starts an entity becomes B-X. "auto" detects the scheme from this sequence only;
    prefer detecting on the whole corpus (`convert_sentences`).

    Args:
      tags: the tags of one sentence.
      scheme: one of SCHEMES.

    Returns:
      (IOB2 tags, number of tags whose text changed).

    Raises:
      ValueError: an unknown scheme, or a tag the scheme does not allow (message names the tag).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"tag scheme {scheme!r} is not one of {SCHEMES}")
    if scheme == "auto":
        scheme = detect_scheme([tags])
    result = []
    previous_type = ""
    for tag in tags:
        prefix, entity_type = split_tag(tag)
        if prefix == OUTSIDE:
            result.append(OUTSIDE)
            previous_type = ""
            continue
        starts = _starts_entity(tag, prefix, entity_type, previous_type, scheme)
        result.append(f"{'B' if starts else 'I'}-{entity_type}")
        previous_type = entity_type
    changed = sum(old != new for old, new in zip(tags, result))
    return result, changed


def _starts_entity(
    tag: str, prefix: str, entity_type: str, previous_type: str, scheme: str
) -> bool:
    """Whether a non-O tag begins a new entity, given the previous word's type ("" after O)."""
    continues = entity_type == previous_type
    if scheme == "io":
        if prefix not in ("", "I", "B"):
            raise ValueError(f"tag {tag!r} is not an IO tag; use --tag_scheme bioes")
        # In IO a B- can only mean "new entity"; bare and I- tags continue a run of their type.
        return prefix == "B" or not continues
    if prefix == "":
        raise ValueError(f"tag {tag!r} has no B-/I- prefix; use --tag_scheme io")
    if scheme in ("iob1", "iob2") and prefix in _BIOES_ONLY:
        raise ValueError(f"tag {tag!r} is not valid in {scheme}; use --tag_scheme bioes")
    # BIOES: S-/U- always start; B- always starts; I-/E-/L- continue when the type matches.
    return prefix in ("B", "S", "U") or not continues


def convert_sentences(
    sentences: Sequence[data.Sentence], scheme: str, path: str = ""
) -> tuple[list[data.Sentence], dict]:
    """Converts the tags of labelled sentences to IOB2.

    Args:
      sentences: sentences of one corpus (unlabelled ones pass through unchanged).
      scheme: one of SCHEMES; "auto" detects it over all the sentences with `detect_scheme`.
      path: where the sentences come from, for messages when a sentence has no source.

    Returns:
      (new sentences, report) where report is {"scheme": the scheme used, "repaired": number of
      tags whose text changed}.

    Raises:
      DataError: a tag the scheme does not allow, naming the sentence's "path:line".
      ValueError: an unknown scheme.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"tag scheme {scheme!r} is not one of {SCHEMES}")
    if scheme == "auto":
        scheme = _detect_or_raise(sentences, path)
    _check_unhyphenated_prefixes(sentences, path)
    converted = []
    repaired = 0
    for sentence in sentences:
        if sentence.tags is None:
            converted.append(sentence)
            continue
        try:
            tags, changed = to_iob2(sentence.tags, scheme)
        except ValueError as e:
            location = _tag_location(sentence, _first_bad_tag(sentence.tags), path)
            raise data.DataError(location, str(e).split("; ")[0], _fix(e)) from None
        repaired += changed
        converted.append(dataclasses.replace(sentence, tags=tuple(tags)))
    return converted, {"scheme": scheme, "repaired": repaired}


def _detect_or_raise(sentences: Sequence[data.Sentence], path: str) -> str:
    """detect_scheme, turning a bad tag into a DataError that names its sentence."""
    for sentence in sentences:
        for i, tag in enumerate(sentence.tags or ()):
            try:
                split_tag(tag)
            except ValueError as e:
                location = _tag_location(sentence, i, path)
                raise data.DataError(location, str(e).split("; ")[0], _fix(e)) from None
    return detect_scheme(s.tags for s in sentences if s.tags is not None)


def _check_unhyphenated_prefixes(sentences: Sequence[data.Sentence], path: str) -> None:
    """Refuses bare tags "BPER" and "IPER" in one corpus: B-/I- prefixes without their hyphen,
    which would otherwise be two IO types, never one entity."""
    first: dict[str, tuple[data.Sentence, int]] = {}
    for sentence in sentences:
        for i, tag in enumerate(sentence.tags or ()):
            if tag != OUTSIDE and _PREFIXED.fullmatch(tag) is None:
                first.setdefault(tag, (sentence, i))
    for tag, (sentence, i) in first.items():
        rest = tag[1:]
        if tag[0] == "B" and rest and f"I{rest}" in first:
            raise data.DataError(
                _tag_location(sentence, i, path),
                f"tags {tag!r} and 'I{rest}' look like B-/I- prefixes without a hyphen",
                f"write B-{rest} and I-{rest}")


def _first_bad_tag(tags: Sequence[str]) -> int:
    """Index of the first tag `split_tag` rejects (0 when the problem is not one tag's)."""
    for i, tag in enumerate(tags):
        try:
            split_tag(tag)
        except ValueError:
            return i
    return 0


def _tag_location(sentence: data.Sentence, index: int, path: str) -> str:
    """"path:line" of the sentence's `index`-th token (one token per line in CoNLL files)."""
    source = sentence.source or path
    head, _, line = source.rpartition(":")
    return f"{head}:{int(line) + index}" if line.isdigit() and head else source


def _fix(error: ValueError) -> str:
    parts = str(error).split("; ", 1)
    return parts[1] if len(parts) > 1 else "fix the tag"


def label_types(labels: Sequence[str]) -> tuple[int, ...]:
    """Entity type id of every label: B-PER and I-PER share one, O (and IO tags) their own.

    Ids number the types in order of first appearance in `labels`.
    """
    ids: dict[str, int] = {}
    return tuple(ids.setdefault(label[2:] if label[:2] in ("B-", "I-") else label, len(ids))
                 for label in labels)


def label_list(sentences: Iterable[data.Sentence]) -> list[str]:
    """The label set of IOB2 data: "O", then "B-T", "I-T" for each entity type T in sorted order.

    Both B-T and I-T are listed even if I-T never occurs, so that other splits may use it.

    Raises:
      DataError: a tag that is not IOB2 (convert with `convert_sentences` first).
    """
    types = set()
    for sentence in sentences:
        for tag in sentence.tags or ():
            prefix, entity_type = _iob2_parts(sentence, tag)
            if prefix != OUTSIDE:
                types.add(entity_type)
    return [OUTSIDE] + [f"{p}-{t}" for t in sorted(types) for p in ("B", "I")]


def _iob2_parts(sentence: data.Sentence, tag: str) -> tuple[str, str]:
    try:
        prefix, entity_type = split_tag(tag)
    except ValueError:
        prefix, entity_type = "?", tag
    if prefix not in (OUTSIDE, "B", "I"):
        raise data.DataError(
            sentence.source, f"tag {tag!r} is not IOB2", "convert the tags with convert_sentences"
        )
    return prefix, entity_type


def entity_types(labels: Sequence[str]) -> list[str]:
    """Entity types of a label list, in order of first appearance: ["O", "B-PER"] -> ["PER"].

    Works for IOB2 data labels and for IO teacher labels ("PER", "LOC") alike.
    """
    seen: dict[str, None] = {}
    for label in labels:
        prefix, entity_type = split_tag(label)
        if prefix != OUTSIDE:
            seen.setdefault(entity_type, None)
    return list(seen)


def check_labels_known(
    sentences: Iterable[data.Sentence], labels: Sequence[str], split_name: str
) -> None:
    """Raises DataError at the first sentence with a tag outside `labels` (the training labels)."""
    known = set(labels)
    for sentence in sentences:
        for i, tag in enumerate(sentence.tags or ()):
            if tag not in known:
                raise data.DataError(
                    _tag_location(sentence, i, ""),
                    f"tag {tag} in {split_name} is not in the training labels ({' '.join(labels)})",
                    f"fix the tag in {split_name}, or add training data that has it",
                )


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
