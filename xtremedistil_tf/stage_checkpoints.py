"""What a training stage keeps so that a crash or a kill loses at most a few steps.

`StageCheckpoints` writes the model, the optimizer, the stage's `Progress` (epoch, batch, loss
sums, early-stopping state, history) and the learning-rate scale after every epoch and every N
optimizer steps; `BestWeights` keeps the best dev weights in memory and on disk; `KILL_AT_ENV`
injects a SIGKILL at a chosen step for the resume tests.
"""

from __future__ import annotations

import os

import tensorflow as tf


def value(variable):
    """A scalar variable's value as a Python number (also for the mirrored variables of a
    tf.distribute scope, which `int()` does not accept)."""
    return variable.numpy().item()


class Progress(tf.Module):
    """Where a stage is, saved in its checkpoint with the model and the optimizer."""

    def __init__(self, baseline: float, terms: int):
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64)  # finished epochs
        self.step = tf.Variable(0, dtype=tf.int64)  # finished batches of the current epoch
        self.loss_sum = tf.Variable(0.0, dtype=tf.float64)
        self.term_sums = tf.Variable(tf.zeros(terms, tf.float64))  # the loss's named terms
        self.best = tf.Variable(baseline, dtype=tf.float64)
        self.best_epoch = tf.Variable(0, dtype=tf.int64)
        self.waited = tf.Variable(0, dtype=tf.int64)
        self.history = tf.Variable("[]", dtype=tf.string)  # JSON rows of finished epochs
        self.best_path = tf.Variable("", dtype=tf.string)  # checkpoint of the best weights


class StageCheckpoints:
    """A stage's resume checkpoints: model, optimizer, `Progress` and learning-rate scale,
    written after every epoch and every `every` optimizer steps (none without a folder)."""

    def __init__(self, folder: str | None, every: int, model, optimizer, progress: Progress,
                 schedule, best: BestWeights):
        self.every, self.optimizer, self.best = every, optimizer, best
        self.manager = None
        if folder:
            ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, progress=progress,
                                       lr_scale=schedule.scale)
            self.manager = tf.train.CheckpointManager(ckpt, folder, max_to_keep=1)

    def restore(self) -> bool:
        """Continues from the last checkpoint, if there is one; returns whether there was."""
        if not self.manager or not self.manager.latest_checkpoint:
            return False
        self.best.load()  # before the current state: it passes through the model's variables
        self.manager.checkpoint.restore(
            self.manager.latest_checkpoint).assert_existing_objects_matched()
        return True

    def after_step(self) -> None:
        if self.manager and self.every and value(self.optimizer.iterations) % self.every == 0:
            self.manager.save()

    def after_epoch(self) -> None:
        if self.manager:
            self.manager.save()


class BestWeights:
    """The best weights of a stage: in memory, and on disk when the stage is checkpointed."""

    def __init__(self, model, checkpoint_dir: str | None, progress: Progress):
        self.model = model
        self.folder = checkpoint_dir
        self.progress = progress
        self.values = None

    @property
    def empty(self) -> bool:
        return self.values is None

    def save(self, epoch: int) -> None:
        self.values = None  # the old copy goes first: never two copies of the weights at once
        self.values = [v.numpy() for v in self.model.weights]
        if self.folder:
            # A new prefix each time: a crash while writing leaves the recorded one intact.
            path = tf.train.Checkpoint(model=self.model).write(
                os.path.join(self.folder, f"best-{epoch}"))
            self.progress.best_path.assign(path)

    def load(self) -> None:
        """Reads the recorded best weights from disk (through the model's variables)."""
        reader = tf.train.load_checkpoint(self.folder)
        path = reader.get_tensor("progress/best_path/.ATTRIBUTES/VARIABLE_VALUE").decode()
        if path:
            tf.train.Checkpoint(model=self.model).read(path).expect_partial()
            self.values = [v.numpy() for v in self.model.weights]

    def restore(self) -> None:
        if self.values is not None:
            for v, w in zip(self.model.weights, self.values):
                v.assign(w)


# Fault injection for the resume tests: `<stage name>:<optimizer step>` kills this process
# (SIGKILL, like the OOM killer) right after that step and its checkpoint, if any.
KILL_AT_ENV = "XTREMEDISTIL_KILL_AT"


def kill_step(stage_name: str) -> int | None:
    name, _, step = os.environ.get(KILL_AT_ENV, "").rpartition(":")
    return int(step) if name == stage_name and step.isdigit() else None
