"""The end of a run: teacher and student scored on test (with size and speed), then exported.

`evaluate` gives `metrics.json`'s teacher and student entries; `export` writes the student (and
with `--export_teacher` the teacher) in every `--export_formats`, trimmed with `--trim_vocab`.
"""

from __future__ import annotations

import os

import numpy as np

from xtremedistil_tf import (
    export as export_lib,
    model_folders,
    models,
    report,
    savedmodel,
    speed,
    vocab_trim,
)
from xtremedistil_tf.report import log


def evaluate(cfg, teacher, student) -> dict:
    entries = {}
    for name, side in (("teacher", teacher), ("student", student)):
        tagger, splits, folder = side.tagger, side.splits, side.folder
        scores = tagger.score(splits["test"])
        timing = speed.time_forward(tagger.model, len(tagger.tokenizer), cfg.speed_batch_size,
                                    cfg.speed_seq_length)
        entries[name] = report.model_entry(scores, models.count_params(tagger.model),
                                           model_folders.weights_size_mb(folder),
                                           timing["ms_per_batch"])
        # How much of `params` is the word-embedding table (most of a small student on a
        # 250k multilingual vocabulary; --trim_vocab exports it smaller).
        entries[name]["embedding_params"] = models.embedding_params(tagger.model)
        entries[name]["dev_f1"] = tagger.score(splits["dev"])["f1"]  # what model choice saw
        entries[name]["timing"] = timing
        entries[name]["compute_dtype"] = tagger.model.compute_dtype  # of the scores and timing
        if cfg.data.target_langs:
            entries[name]["target_avg_f1"] = float(np.mean(
                [scores["per_language"][lang]["f1"] for lang in cfg.data.target_langs]))
    extra = {}
    if cfg.mixed_precision != "none":  # how they trained (scored: `compute_dtype`, float32)
        extra["mixed_precision"] = cfg.mixed_precision
    if cfg.data.source_lang:
        extra["protocol"] = {
            "source_lang": cfg.data.source_lang, "target_langs": list(cfg.data.target_langs),
            "strategy": cfg.strategy,
            "model_choice": f"{cfg.data.source_lang} dev only (zero-shot: no target labels "
                            "before evaluation)"}
    return report.metrics_document(entries["teacher"], entries["student"], extra)


def export(cfg, state, student_side, teacher_side, transfer) -> dict:
    if state.done("export"):
        return dict(state.done("export"))
    if not cfg.export_formats:
        log("no export (--export_formats=none)")
        state.mark("export", {})
        return {}
    student, s_tok, labels = student_side.model, student_side.tokenizer, student_side.labels
    teacher, t_tok, teacher_labels = (teacher_side.model, teacher_side.tokenizer,
                                      teacher_side.labels)
    name = cfg.export_name or os.path.basename(os.path.normpath(cfg.output_dir))
    info = None
    if cfg.trim_vocab:
        student, s_tok, info = vocab_trim.trim_to_text(student, s_tok, transfer)
    paths = {}
    for which, model, model_labels, tok, model_name in (
            ("student", student, labels, s_tok, name),
            ("teacher", teacher, teacher_labels, t_tok, name + "-teacher")):
        if which == "student" or cfg.export_teacher:
            done = export_lib.export_formats(model, model_labels, tok, cfg.export_dir,
                                             model_name, cfg.export_formats)
            # "student" / "teacher" name the SavedModel, "student-litert" ... the others.
            paths.update({which if fmt == "savedmodel" else f"{which}-{fmt}": path
                          for fmt, path in done.items()})
    for k, p in list(paths.items()):
        log(f"exported {k} to {p}")
    if info:
        info["export_mb"] = savedmodel.variables_mb(paths["student"])
        paths["trimmed_vocab"] = info
    state.mark("export", paths)
    return dict(paths)
