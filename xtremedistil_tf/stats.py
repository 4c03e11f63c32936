"""Dataset statistics: `python -m xtremedistil_tf.stats --train_file A --dev_file B --test_file C`.

Prints a markdown table with, per split: sentences, tokens, unique tokens, mean and max sentence
length, entities (number of B- tags after conversion to IOB2) and the count of every tag; then one
row per split and language when the data names its languages. A bad file prints its one-line
DataError on stderr and exits with status 2. Flags are absl flags, as in every command (`cli`).
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Iterable, Mapping, Sequence

from xtremedistil_tf import data, labels

_SPLITS = ("train", "dev", "test")


def dataset_stats(sentences: Iterable[data.Sentence]) -> dict:
    """Counts of one split.

    Args:
      sentences: the split's sentences (tags IOB2, or None for unlabelled text).

    Returns:
      {"sentences", "tokens", "unique_tokens", "mean_length", "max_length", "entities",
       "tags": {tag: count}, "entities_by_type": {type: count},
       "languages": {lang: {"sentences", "tokens", "entities"}}} — "languages" only holds
      sentences whose language is known. Dict keys are sorted.
    """
    n_sentences = n_tokens = max_length = 0
    vocabulary: set[str] = set()
    tag_counts: collections.Counter[str] = collections.Counter()
    by_lang: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for sentence in sentences:
        n_sentences += 1
        n_tokens += len(sentence.words)
        max_length = max(max_length, len(sentence.words))
        vocabulary.update(sentence.words)
        tag_counts.update(sentence.tags or ())
        if sentence.lang is not None:
            by_lang[sentence.lang].update(_lang_counts(sentence))
    by_type = {t[2:]: n for t, n in tag_counts.items() if t.startswith("B-")}
    return {
        "sentences": n_sentences,
        "tokens": n_tokens,
        "unique_tokens": len(vocabulary),
        "mean_length": n_tokens / n_sentences if n_sentences else 0.0,
        "max_length": max_length,
        "entities": sum(by_type.values()),
        "tags": dict(sorted(tag_counts.items())),
        "entities_by_type": dict(sorted(by_type.items())),
        "languages": {lang: dict(c) for lang, c in sorted(by_lang.items())},
    }


def _lang_counts(sentence: data.Sentence) -> dict[str, int]:
    entities = sum(tag.startswith("B-") for tag in sentence.tags or ())
    return {"sentences": 1, "tokens": len(sentence.words), "entities": entities}


def format_stats(stats_by_split: Mapping[str, dict]) -> str:
    """Renders {split name: dataset_stats(...)} as markdown tables (splits, then languages)."""
    columns = ["split", "sentences", "tokens", "unique tokens", "mean length", "max length"]
    rows = [
        "| " + " | ".join(columns + ["entities", "tags"]) + " |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for split, s in stats_by_split.items():
        tags = " ".join(f"{tag}:{n}" for tag, n in s["tags"].items()) or "-"
        rows.append(
            f"| {split} | {s['sentences']} | {s['tokens']} | {s['unique_tokens']} | "
            f"{s['mean_length']:.1f} | {s['max_length']} | {s['entities']} | {tags} |"
        )
    lang_rows = [
        f"| {split} | {lang} | {c['sentences']} | {c['tokens']} | {c['entities']} |"
        for split, s in stats_by_split.items()
        for lang, c in s["languages"].items()
    ]
    if lang_rows:
        rows += ["", "| split | lang | sentences | tokens | entities |", "|---|---|---:|---:|---:|"]
        rows += lang_rows
    return "\n".join(rows)


def read_split(
    paths: str, labelled: bool, tag_scheme: str
) -> tuple[list[data.Sentence], list[str]]:
    """Reads one split's files, converting each labelled file's tags to IOB2 on its own.

    Returns:
      (sentences, notes) where notes say which scheme each labelled file used and how many tags
      changed.
    """
    if not labelled:
        return data.read_unlabelled_files(paths), []
    sentences, notes = [], []
    for path in data.split_paths(paths):
        converted, report = labels.convert_sentences(data.read_conll(path), tag_scheme, path)
        sentences += converted
        notes.append(f"{path}: scheme {report['scheme']}, {report['repaired']} tags changed")
    return sentences, notes


def define_flags(fv) -> None:
    """The command's flags, defined into `fv` (see `cli`)."""
    from absl import flags

    for split in _SPLITS:
        flags.DEFINE_string(f"{split}_file", None, f"{split} CoNLL file(s), comma-separated.",
                            flag_values=fv)
    flags.DEFINE_string("transfer_file", None, "Unlabelled transfer text file(s).",
                        flag_values=fv)
    flags.DEFINE_enum("tag_scheme", "auto", list(labels.SCHEMES), "Tag scheme of the files.",
                      flag_values=fv)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command on the flags `argv`; returns the exit status (0, or 2 for bad input)."""
    from xtremedistil_tf import cli

    return cli.main(define_flags, run_from_flags, "stats", argv)


def run_from_flags(args) -> int:
    """Prints the statistics the parsed flags ask for; returns the exit status."""
    if not any(getattr(args, f"{split}_file") for split in (*_SPLITS, "transfer")):
        print("error: give at least one of --train_file, --dev_file, --test_file, "
              "--transfer_file", file=sys.stderr)
        return 2
    splits = [(split, getattr(args, f"{split}_file"), True) for split in _SPLITS]
    splits.append(("transfer", args.transfer_file, False))
    stats, notes = {}, []
    try:
        for split, paths, labelled in splits:
            if paths:
                sentences, split_notes = read_split(paths, labelled, args.tag_scheme)
                stats[split] = dataset_stats(sentences)
                notes += split_notes
    except data.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_stats(stats))
    if notes:
        print("\n" + "\n".join(f"- {note}" for note in notes))
    return 0


if __name__ == "__main__":
    from xtremedistil_tf import cli

    cli.run_app(define_flags, run_from_flags)
