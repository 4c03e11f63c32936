"""Tag schemes and label sets.

Inside the package every tag sequence is IOB2 ("B-X" starts an entity, "I-X" continues it, "O").
`convert_sentences` brings IOB1, IO and BIOES data to IOB2; `label_list` builds the label set from
the training data. A ready-made teacher's own label names are mapped onto these by
`teacher_labels`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

from xtremedistil_tf import data

SCHEMES = ("auto", "iob1", "iob2", "io", "bioes")
OUTSIDE = "O"

# One-letter prefix, a hyphen, then the type. Anything else except "O" is a bare type ("LOC").
_PREFIXED = re.compile(r"([A-Za-z])-(.+)")
_KNOWN_PREFIXES = frozenset("BIESLU")
# L-/U- (BILOU) are the same as E-/S- (BIOES).
_BIOES_ONLY = frozenset("ESLU")


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
