"""Readers and writer for NER data: CoNLL columns, XTREME "lang:token" files and plain text.

Every reader returns a list of `Sentence` values and reports bad input with a `DataError` whose
message is one line, "<path>:<line>: <what is wrong>; <what to fix>", so that entry points can print
it as is. Nothing is dropped silently: a line the readers cannot use is an error, not a skip.

CoNLL layout (`read_conll`):
  * one token per line; columns separated by TAB, or by runs of whitespace when the line has no TAB;
  * the first column is the token, the LAST column the tag; middle columns (POS, chunk) are ignored;
  * sentences end at empty or whitespace-only lines (real files hold lines with only a TAB);
  * `-DOCSTART-` lines end the current sentence and are skipped;
  * a UTF-8 BOM and CRLF line ends are tolerated.

XTREME layout: every token of the file reads "lang:token" (`en:Paris`). This is detected per file:
only when ALL tokens carry such a prefix is it stripped into `Sentence.lang`, so that an ordinary
token such as `http://x` in a normal file is left alone.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from collections.abc import Sequence

DOCSTART = "-DOCSTART-"
LAYOUTS = ("auto", "conll", "lines")

# Two or three lowercase letters, optionally a region or variant ("zh-yue"), then the colon.
LANG_PREFIX = re.compile(r"[a-z]{2,3}(?:-[a-z]+)?:")
# A file spec with a language for all its sentences: "de=path/to/train.conll".
_LANG_SPEC = re.compile(r"([a-z]{2,3}(?:-[a-z]+)?)=(.+)")
# Share of lines that must hold at most 3 columns for `read_unlabelled` to choose CoNLL.
_CONLL_SHORT_LINE_SHARE = 0.9
_CONLL_MAX_COLUMNS = 3


@dataclasses.dataclass(frozen=True)
class Sentence:
    """One sentence of words, with tags when labelled.

    Attributes:
      words: the words, in order.
      tags: one tag per word, or None for unlabelled text.
      lang: language code from an XTREME "lang:token" prefix or given by the caller, else None.
      source: "path:line" of the sentence's first token, used in error messages.
    """

    words: tuple[str, ...]
    tags: tuple[str, ...] | None
    lang: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        # Accept lists from callers but store tuples, so Sentences stay hashable and immutable.
        if not isinstance(self.words, tuple):
            object.__setattr__(self, "words", tuple(self.words))
        if self.tags is not None and not isinstance(self.tags, tuple):
            object.__setattr__(self, "tags", tuple(self.tags))
        if self.tags is not None and len(self.tags) != len(self.words):
            raise ValueError(
                f"{self.source or 'Sentence'}: {len(self.words)} words but {len(self.tags)} tags; "
                "give exactly one tag per word"
            )


class DataError(ValueError):
    """Bad input data. `str(e)` is one line: "<location>: <problem>; <fix>".

    Attributes:
      location: "path:line", or just "path" when no line applies (e.g. a missing file).
      problem: what is wrong.
      fix: what the user should do about it.
    """

    def __init__(self, location: str, problem: str, fix: str):
        self.location = location
        self.problem = problem
        self.fix = fix
        prefix = f"{location}: " if location else ""
        super().__init__(f"{prefix}{problem}; {fix}")


def split_paths(paths: str | Sequence[str]) -> list[str]:
    """Turns "a,b" or ["a", "b"] into a list of non-empty, stripped paths."""
    if isinstance(paths, str):
        paths = paths.split(",")
    result = [p.strip() for p in paths if p and p.strip()]
    if not result:
        raise DataError("", "no data file given", "pass one path or a comma-separated list")
    return result


def read_conll(path: str, labelled: bool = True, lang: str | None = None) -> list[Sentence]:
    """Reads a CoNLL (or XTREME "lang:token") file; see the module docstring for the layout.

    Args:
      path: file to read.
      labelled: if True every line needs a tag column (the last one); if False the file may have
        a single column and any tag column is ignored (tags=None).
      lang: language for every sentence when the file has no "lang:" prefixes.

    Returns:
      The sentences in file order.

    Raises:
      DataError: missing or non-UTF-8 file, no sentences, a missing tag column, an empty token,
        a column count that changes within the file, or mixed languages within one sentence.
    """
    lines = _read_lines(path)
    blocks = _conll_blocks(path, lines, labelled)
    return _to_sentences(path, blocks, labelled, lang, token_per_line=True)


def read_unlabelled(path: str, lang: str | None = None, layout: str = "auto") -> list[Sentence]:
    """Reads unlabelled text, either one sentence per line or CoNLL columns; tags are None.

    With layout="auto" the file is read as CoNLL when it has at least one blank line and at least
    90% of its non-blank lines hold at most 3 columns (a token plus tags); otherwise every
    non-blank line is one sentence of whitespace-separated words. Prose with blank lines between
    paragraphs fails the 90% test because most sentences are longer than three words.

    Args:
      path: file to read.
      lang: language for every sentence when the file has no "lang:" prefixes.
      layout: "auto", "conll" or "lines" to skip detection.

    Returns:
      The sentences in file order, with tags=None.

    Raises:
      DataError: see `read_conll`.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is not one of {LAYOUTS}")
    lines = _read_lines(path)
    conll = layout == "conll" or (layout == "auto" and looks_like_conll(lines))
    blocks = _conll_blocks(path, lines, labelled=False) if conll else _line_blocks(lines)
    return _to_sentences(path, blocks, False, lang, token_per_line=conll)


def file_language(spec: str) -> tuple[str | None, str]:
    """Splits a file spec "de=path/to/file" into ("de", "path/to/file"); plain paths get None.

    The language (same form as an XTREME prefix: "de", "zh-yue") applies to every sentence of
    a file without "lang:" token prefixes, so per-language scores work for ordinary CoNLL files.
    """
    match = _LANG_SPEC.fullmatch(spec)
    return (match.group(1), match.group(2)) if match else (None, spec)


def read_labelled_files(paths: str | Sequence[str]) -> list[Sentence]:
    """Reads and concatenates labelled CoNLL files ("a.conll,de=b.conll" or a list of specs)."""
    return [s for spec in split_paths(paths)
            for s in read_conll(file_language(spec)[1], labelled=True,
                                lang=file_language(spec)[0])]


def read_unlabelled_files(paths: str | Sequence[str]) -> list[Sentence]:
    """Reads and concatenates unlabelled files ("a.txt,de=b.txt"), each via `read_unlabelled`."""
    return [s for spec in split_paths(paths)
            for s in read_unlabelled(file_language(spec)[1], lang=file_language(spec)[0])]


def write_conll(path: str, sentences: Sequence[Sentence], with_lang: bool = False) -> None:
    """Writes "token<TAB>tag" lines with a blank line after each sentence, atomically.

    The file is written to a temporary file in the same directory and moved into place with
    `os.replace`, so readers never see a half-written file.

    Args:
      path: destination file.
      sentences: sentences to write; unlabelled ones are written as one column.
      with_lang: write tokens as "lang:token" (XTREME layout) for sentences with a language.

    Raises:
      ValueError: a token that could not be read back (empty, or holding whitespace).
    """
    chunks = [_format_sentence(s, with_lang) for s in sentences]
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".conll")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(chunks)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _format_sentence(sentence: Sentence, with_lang: bool) -> str:
    prefix = f"{sentence.lang}:" if with_lang and sentence.lang else ""
    rows = []
    for i, word in enumerate(sentence.words):
        # A token with whitespace would be split into columns when read back.
        if not word or word != "".join(word.split()):
            raise ValueError(
                f"{sentence.source or 'sentence'}: token {word!r} is empty or holds whitespace; "
                "clean the token before writing"
            )
        tag = "" if sentence.tags is None else f"\t{sentence.tags[i]}"
        rows.append(f"{prefix}{word}{tag}\n")
    rows.append("\n")
    return "".join(rows)


def _read_lines(path: str) -> list[str]:
    """Returns the file's lines without line ends, after checking existence and UTF-8."""
    if not os.path.exists(path):
        raise DataError(path, "file not found", "check the path")
    if os.path.isdir(path):
        raise DataError(path, "is a directory, not a file", "give the path of a data file")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        # utf-8-sig offsets count the BOM too, so they are offsets in the raw file.
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{path}:{line}",
            f"not valid UTF-8 (byte offset {e.start}, byte 0x{raw[e.start]:02x})",
            "re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8",
        ) from None
    if not text.strip():
        raise DataError(f"{path}:1", "file is empty", "give a file with at least one sentence")
    # split("\n") rather than splitlines(): the latter also splits on characters such as U+2028
    # that can occur inside tokens, which would shift line numbers and break tokens.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


# A block is (first line number, tokens, tags or None): one sentence before language handling.
_Block = tuple[int, list[str], "list[str] | None"]


def _conll_blocks(path: str, lines: list[str], labelled: bool) -> list[_Block]:
    """Splits CoNLL lines into sentence blocks, validating columns as it goes."""
    blocks: list[_Block] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    expected = 0  # column count set by the first token line; 0 until then
    expected_line = 0
    for number, line in enumerate(lines, start=1):
        if not line or line.isspace():
            start = _close_block(blocks, start, tokens, tags, labelled)
            tokens, tags = [], []
            continue
        columns = line.rstrip().split("\t") if "\t" in line else line.split()
        token = columns[0].strip()
        tag = columns[-1].strip()
        if token == DOCSTART:
            start = _close_block(blocks, start, tokens, tags, labelled)
            tokens, tags = [], []
            continue
        # Only lines that differ from the expected shape pay for the detailed checks.
        if len(columns) != expected or not token or not tag:
            if expected == 0:
                expected, expected_line = len(columns), number
            _check_columns(path, number, columns, token, labelled, expected, expected_line)
        if not tokens:
            start = number
        tokens.append(token)
        tags.append(tag)
    _close_block(blocks, start, tokens, tags, labelled)
    return blocks


def _close_block(
    blocks: list[_Block], start: int, tokens: list[str], tags: list[str], labelled: bool
) -> int:
    if tokens:
        blocks.append((start, tokens, tags if labelled else None))
    return 0


def _check_columns(
    path: str,
    number: int,
    columns: list[str],
    token: str,
    labelled: bool,
    expected: int,
    expected_line: int,
) -> None:
    where = f"{path}:{number}"
    if labelled and len(columns) < 2:
        raise DataError(
            where,
            f"found one column ({columns[0]!r}), expected 'token<TAB>tag'",
            "add the tag column, or read the file as unlabelled data",
        )
    if not token:
        raise DataError(where, "empty token", "remove the line or put the token in column 1")
    if labelled and not columns[-1].strip():
        raise DataError(where, f"empty tag for token {token!r}", "put the tag in the last column")
    if len(columns) != expected:
        raise DataError(
            where,
            f"found {len(columns)} columns, expected {expected} columns like line {expected_line}",
            "use the same columns on every line of the file",
        )


def looks_like_conll(lines: list[str]) -> bool:
    """True when the file has blank-line separated blocks of short (<= 3 column) lines."""
    has_blank = False
    non_blank = short = 0
    for line in lines:
        if not line.strip():
            has_blank = has_blank or non_blank > 0
            continue
        non_blank += 1
        n_columns = len(line.split("\t")) if "\t" in line.strip() else len(line.split())
        short += n_columns <= _CONLL_MAX_COLUMNS
    return has_blank and short >= _CONLL_SHORT_LINE_SHARE * non_blank


def _line_blocks(lines: list[str]) -> list[_Block]:
    """One block per non-blank line, words split on whitespace."""
    return [(n, line.split(), None) for n, line in enumerate(lines, start=1) if line.strip()]


def _to_sentences(
    path: str, blocks: list[_Block], labelled: bool, lang: str | None, token_per_line: bool
) -> list[Sentence]:
    """Turns blocks into Sentences, stripping "lang:" prefixes when every token has one.

    token_per_line says whether token i of a block sits on line start + i (CoNLL) or on the
    block's own line (one sentence per line); it only matters for error line numbers.
    """
    if not blocks:
        kind = "labelled " if labelled else ""
        raise DataError(f"{path}:1", f"no {kind}sentences found", "check the file's layout")
    xtreme = all(LANG_PREFIX.match(t) for _, tokens, _ in blocks for t in tokens)
    sentences = []
    for start, tokens, tags in blocks:
        sentence_lang = lang
        if xtreme:
            sentence_lang, tokens = strip_lang(path, start, tokens, token_per_line)
        sentences.append(
            Sentence(
                words=tuple(tokens),
                tags=None if tags is None else tuple(tags),
                lang=sentence_lang,
                source=f"{path}:{start}",
            )
        )
    return sentences


def strip_lang(
    path: str, start: int, tokens: list[str], token_per_line: bool
) -> tuple[str, list[str]]:
    """Splits "lang:token" tokens of one sentence; all must share one language."""
    langs, words = zip(*(t.split(":", 1) for t in tokens))
    for i, (lang, word) in enumerate(zip(langs, words)):
        where = f"{path}:{start + i if token_per_line else start}"
        if lang != langs[0]:
            raise DataError(
                where,
                f"token {tokens[i]!r} is {lang} but its sentence is {langs[0]}",
                "put a blank line between sentences of different languages",
            )
        if not word:
            raise DataError(
                where, f"empty token after {lang}:", "write the token after the colon"
            )
    return langs[0], list(words)
