"""One training stage of a run: its batches (in memory or streamed from the teacher cache), its
dev monitor, its loop settings and where it checkpoints; `finish_stage` records it as done.

`pipeline` calls `run_stage` for the teacher's fine-tuning and for every student stage.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil

import tensorflow as tf

from xtremedistil_tf import (
    config as config_lib,
    features,
    model_folders,
    objectives,
    teacher_cache,
    teacher_outputs,
    train,
)
from xtremedistil_tf.tagging import Tagger


def student_loop(cfg: config_lib.RunConfig) -> train.LoopConfig:
    """How every distillation stage's loop runs (`train.LoopConfig`)."""
    return train.LoopConfig(
        weight_decay=cfg.distil.weight_decay, warmup_ratio=cfg.distil.warmup_ratio, xla=cfg.xla,
        checkpoint_every=cfg.checkpoint_every, skip_nonfinite=cfg.skip_nonfinite_batches,
        seed=cfg.seed,
        distribution=(tf.distribute.get_strategy() if tf.distribute.has_strategy()
                      else None))


def teacher_loop(cfg: config_lib.RunConfig) -> train.LoopConfig:
    """The teacher's fine-tuning loop: the student's, with the teacher's optimizer settings."""
    return dataclasses.replace(student_loop(cfg), weight_decay=cfg.teacher.weight_decay,
                               warmup_ratio=cfg.teacher.warmup_ratio,
                               reduce_lr_on_plateau=cfg.teacher.reduce_lr_on_plateau)


def run_stage(model, stage, splits, tagger: Tagger, cfg, settings, loop: train.LoopConfig,
               targets=None, log_name="teacher", baseline=-math.inf):
    dcfg = cfg.data
    source = splits[stage.data]
    keys = objectives.batch_keys(stage.objective)
    stage_targets = (targets or {}).get(stage.data, {})
    streamed = isinstance(stage_targets, teacher_cache.TeacherCache)
    word_targets = {} if streamed else {k: v for k, v in stage_targets.items() if k in keys}

    def make(epoch):
        if streamed:  # chunks of the on-disk cache, a few at a time
            return stage_targets.batches(source.windows, keys, dcfg.batch_size,
                                         dcfg.max_seq_length, tagger.tokenizer.pad_token_id,
                                         seed=cfg.seed * 1000 + epoch)
        batches = features.make_batches(source.windows, dcfg.batch_size, dcfg.max_seq_length,
                                        tagger.tokenizer.pad_token_id, word_targets or None,
                                        shuffle=True, seed=cfg.seed * 1000 + epoch)
        if stage.objective == "msd":  # each target batch meets a batch of source sentences
            teacher_outputs.add_source_batches(batches, splits["source"], targets["source_cls"],
                                               dcfg, tagger.tokenizer.pad_token_id,
                                               cfg.seed * 1000 + epoch)
        return batches

    if stage.monitor == "dev_f1":
        def monitor():
            return tagger.score(splits["dev"])["f1"]
    else:
        dev_targets = {k: v for k, v in (targets or {}).get("dev", {}).items() if k in keys}
        dev_batches = tagger.batches(splits["dev"], dev_targets)

        def monitor():
            return -train.mean_loss(model, stage.objective, settings, dev_batches)

    return train.run_stage(
        model, stage, train.epoch_batches(make), monitor, settings, loop,
        checkpoint_dir=checkpoint_dir(cfg, log_name),
        log_dir=os.path.join(cfg.output_dir, "tensorboard", log_name), baseline=baseline)


def checkpoint_dir(cfg, name: str) -> str:
    return os.path.join(cfg.output_dir, "checkpoints", name)


def finish_stage(cfg, state, name, log_name, model, folder, result, labels, tokenizer) -> None:
    """Saves the stage's final weights, marks it done, then drops its resume checkpoints."""
    model_folders.save_weights(model, folder, labels, tokenizer)
    info = {"history": result.history, "seconds": result.seconds, "best": result.best}
    state.mark(name, info)
    shutil.rmtree(checkpoint_dir(cfg, log_name), ignore_errors=True)
