"""The data of a run: labelled splits, the label list and the unlabelled text to distil on.

`load_data` reads and validates every file of a `DataConfig`, converts tags to IOB2 and, under
the zero-shot protocol (`--source_lang`), splits the sentences by language so that gold
target-language tags never reach training.
"""

from __future__ import annotations

import dataclasses
import os

from xtremedistil_tf import config as config_lib, data as data_lib, labels as labels_lib
from xtremedistil_tf.report import log


@dataclasses.dataclass
class Data:
    """What `load_data` read.

    Attributes:
        splits: "train", "dev", "test" labelled sentences (IOB2). Under the zero-shot protocol
            train and dev hold the source language only.
        labels: the label list (from train), O first.
        unlabelled: "transfer" (what the XtremeDistil stages distil on: the training sentences
            without tags plus the transfer files) and, under the zero-shot protocol, "target"
            (target-language text, tags dropped) and "source" (source training sentences).
        config: the data config, with `target_langs` filled in when it was left empty.
    """

    splits: dict[str, list[data_lib.Sentence]]
    labels: list[str]
    unlabelled: dict[str, list[data_lib.Sentence]]
    config: config_lib.DataConfig


def load_data(cfg: config_lib.DataConfig) -> Data:
    """Reads, validates and converts the data (see `Data`)."""
    splits = {}
    for name, files in (("train", cfg.train_files), ("dev", cfg.dev_files),
                        ("test", cfg.test_files)):
        sentences = data_lib.read_labelled_files(files)
        sentences, info = labels_lib.convert_sentences(sentences, cfg.tag_scheme, ",".join(files))
        if info["repaired"]:
            log(f"warning: {name}: {info['repaired']} tags repaired while converting "
                f"{info['scheme']} to IOB2")
        splits[name] = sentences
    if cfg.transfer_files:
        _check_transfer_files(cfg)
    extra = data_lib.read_unlabelled_files(cfg.transfer_files) if cfg.transfer_files else []
    unlabelled = {}
    if cfg.source_lang:
        if not cfg.target_langs:  # every other language of the unlabelled text
            found = {s.lang for s in splits["train"] + extra} - {cfg.source_lang, None}
            cfg = dataclasses.replace(cfg, target_langs=tuple(sorted(found)))
        splits, extra, unlabelled = _zero_shot(splits, extra, cfg)
    labels = labels_lib.label_list(splits["train"])
    for name in ("dev", "test"):
        labels_lib.check_labels_known(splits[name], labels, name)
    unlabelled["transfer"] = [dataclasses.replace(s, tags=None) for s in splits["train"]] + extra
    return Data(splits, labels, unlabelled, cfg)


def _check_transfer_files(cfg: config_lib.DataConfig) -> None:
    """Dev and test files are never transfer text (the student would distil on them)."""
    def real(specs):
        return {os.path.realpath(data_lib.file_language(p)[1]): p
                for p in data_lib.split_paths(specs)}
    held_out = {**real(cfg.dev_files), **real(cfg.test_files)}
    for path, spec in real(cfg.transfer_files).items():
        if path in held_out:
            raise data_lib.DataError(spec, "this --transfer_file is also a dev or test file",
                                     "distil on training or other unlabelled text only")


def _zero_shot(splits: dict, extra: list, cfg: config_lib.DataConfig):
    """Splits the data by language for the zero-shot protocol (see `DataConfig`).

    Target-language tags in the training files are dropped here, before anything else sees
    them: under this protocol gold target labels are read by evaluation only.
    """
    source, targets = cfg.source_lang, set(cfg.target_langs)
    for name, sentences in (("train", splits["train"]), ("dev", splits["dev"]),
                            ("test", splits["test"]), ("transfer", extra)):
        for s in sentences:
            if s.lang is None:
                raise data_lib.DataError(
                    s.source, f"a {name} sentence without a language under --source_lang",
                    "give the file as lang=path (e.g. de=dev.conll) or use lang:token prefixes")
            if name in ("train", "transfer") and s.lang != source and s.lang not in targets:
                raise data_lib.DataError(
                    s.source, f"language {s.lang} is neither --source_lang={source} nor one of "
                    f"--target_langs={','.join(cfg.target_langs)}", "add it to --target_langs "
                    "or leave its file out")
    train = [s for s in splits["train"] if s.lang == source]
    dev = [s for s in splits["dev"] if s.lang == source]
    target = [dataclasses.replace(s, tags=None) for s in splits["train"] + extra
              if s.lang in targets]
    where = ",".join(cfg.train_files)
    if not train:
        raise data_lib.DataError(where, f"no {source} sentences in --train_file",
                                 f"give {source}=path or {source}:token files")
    if not targets:
        raise data_lib.DataError(where, f"no text in a language other than {source}",
                                 "add target-language text: --transfer_file=de=path")
    if not dev:
        raise data_lib.DataError(",".join(cfg.dev_files), f"no {source} dev sentences",
                                 "model choice uses the source language's dev set: add one")
    for lang in cfg.target_langs:
        if not any(s.lang == lang for s in target):
            raise data_lib.DataError(where, f"no {lang} text for target language {lang}",
                                     f"add --transfer_file={lang}=path or {lang} sentences to "
                                     "--train_file (their tags are not used)")
        if not any(s.lang == lang for s in splits["test"]):
            raise data_lib.DataError(",".join(cfg.test_files), f"no {lang} test sentences",
                                     f"add {lang}=path to --test_file to score {lang}")
    log(f"zero-shot: {source} labels train ({len(train)} sentences); "
        f"{len(target)} unlabelled sentences of {','.join(cfg.target_langs)}; model choice on "
        f"{source} dev only ({len(dev)} sentences; {len(splits['dev']) - len(dev)} dev "
        "sentences of other languages unused)")
    splits = {"train": train, "dev": dev, "test": splits["test"]}
    extra = [s for s in extra if s.lang == source] + target
    return splits, extra, {"target": target,
                           "source": [dataclasses.replace(s, tags=None) for s in train]}
