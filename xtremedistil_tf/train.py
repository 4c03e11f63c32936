"""One training loop for every stage: teacher fine-tuning and each distillation stage.

A stage (see `stages.Stage`) says which loss, which data and which variables; this module turns it
into an AdamW optimizer with linear warm-up and decay, a compiled train step over the stage's
variables only, epoch-wise evaluation on dev, early stopping, and the best dev weights restored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import resource
import signal
import sys
import time
import zlib
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from xtremedistil_tf import (
    adamw,
    distribute,
    features,
    objectives,
    precision,
    stage_checkpoints as ckpt_lib,
    stages as stages_lib,
)
from xtremedistil_tf.objectives import LossSettings
from xtremedistil_tf.stage_checkpoints import value as _value

keras = tf.keras
BatchesFn = Callable[[int], Sequence[dict]]


class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak`, then linear decay to 0 at `total_steps`, times `scale`.

    `scale` is a variable so that ReduceLROnPlateau can lower the rate without a new optimizer.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int):
        self.peak = peak
        self.total_steps = max(1, total_steps)
        self.warmup_steps = warmup_steps
        self.scale = tf.Variable(1.0, trainable=False, dtype=tf.float32)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = step / max(1, self.warmup_steps) if self.warmup_steps else 1.0
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        decay = tf.maximum(0.0, (self.total_steps - step) / decay_steps)
        return self.peak * self.scale * tf.minimum(warm, decay)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps}


def stage_variables(model, stage: stages_lib.Stage) -> list[tf.Variable]:
    """The variables `stage` trains."""
    groups = model.variable_groups()
    missing = [g for g in stage.trainable if g not in groups]
    if missing:
        raise ValueError(f"stage {stage.name}: the model has no variable group {missing}")
    return [v for g in stage.trainable for v in groups[g]]


@dataclasses.dataclass
class StageResult:
    """What a stage did: per-epoch history and the best dev value (higher is better)."""

    name: str
    history: list[dict]
    best: float
    best_epoch: int
    seconds: float


def _zero_unless(ok, grad):
    """`grad` where `ok`, else zeros (dense or IndexedSlices)."""
    if isinstance(grad, tf.IndexedSlices):
        return tf.IndexedSlices(tf.where(ok, grad.values, tf.zeros_like(grad.values)),
                                grad.indices, grad.dense_shape)
    return tf.where(ok, grad, tf.zeros_like(grad))


def make_optimizer(variables, learning_rate: float, total_steps: int, warmup_ratio: float,
                   weight_decay: float, fused: bool = True):
    """AdamW over `variables` (LayerNorm weights and biases not decayed) with linear warm-up
    over `warmup_ratio` of `total_steps` and decay to 0; returns (optimizer, schedule). The
    embedding tables are updated in one fused pass (`adamw.AdamW`; `fused=False`: Keras' own
    AdamW, which `scripts/bench_adamw.py` compares).

    Under the float16 policy (`--mixed_precision=float16`) the AdamW is wrapped in a dynamic
    `LossScaleOptimizer` (the train step scales the loss and unscales the gradients; a step
    whose gradients overflow is skipped and the scale halved)."""
    schedule = WarmupLinearDecay(learning_rate, total_steps, int(total_steps * warmup_ratio))
    optimizer = (adamw.AdamW if fused else keras.optimizers.AdamW)(
        learning_rate=schedule, weight_decay=weight_decay)
    optimizer.exclude_from_weight_decay(var_names=["LayerNorm", "layer_norm", "bias"])
    if precision.scales_loss():
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    optimizer.build(variables)
    return optimizer, schedule


def dropout_generators(model, batch: dict) -> list[tf.random.Generator]:
    """The random generators of `model`'s dropout layers (Hugging Face blocks and our heads).

    Keras creates a layer's generator on its first training-mode call, so the model is called
    once on `batch` (its `input_ids` and `attention_mask`) in training mode first. Needs
    `keras.backend.experimental.enable_tf_random_generator()` before the layers were built
    (`models` sets it on import); without it there are no generators and the list is empty.
    """
    model({"input_ids": batch["input_ids"][:1], "attention_mask": batch["attention_mask"][:1]},
          training=True)
    found = []
    for layer in model.submodules:
        generator = getattr(getattr(layer, "_random_generator", None), "_generator", None)
        if isinstance(generator, tf.random.Generator):
            found.append(generator)
    return found


def reseed(generators: Sequence[tf.random.Generator], seed: int, step) -> None:
    """Sets generator i's state to (counter = step, i; key = seed).

    Dropout masks then depend only on the seed, the optimizer step and the layer, never on how
    many masks this process drew before: a resumed stage repeats an uninterrupted one.
    Keras' generators use AUTO_SELECT, which is Philox (a 3-number state) on CPUs and GPUs.
    """
    for i, generator in enumerate(generators):
        if generator.state.shape != (3,):
            raise RuntimeError(f"dropout generator state has shape {generator.state.shape}, "
                               "expected Philox's (3,)")
        generator.state.assign(tf.stack([tf.cast(step, tf.int64), tf.constant(i, tf.int64),
                                         tf.constant(seed, tf.int64)]))


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """How a stage's loop runs: the optimizer's settings and the run-wide ones.

    The pipeline builds one for the teacher's stages and one for the student's, once per run.

    Attributes:
        weight_decay, warmup_ratio: AdamW settings (LayerNorm and biases are not decayed).
        reduce_lr_on_plateau: halve the learning rate after an epoch without improvement.
        xla: compile the train step with XLA.
        verbose: print one line per epoch.
        checkpoint_every: steps between mid-epoch checkpoints (0: only at epoch ends).
        distribution: a `tf.distribute.Strategy` whose scope created the model's variables: every
            batch (the global batch) is split row-wise over its replicas, each replica's loss
            is weighted by its share of the counted positions, gradients are summed across
            replicas. Only the chief writes checkpoints (other workers write to a scratch folder).
        skip_nonfinite: 0 stops the stage at the first NaN/Inf loss. N > 0 skips such a batch
            instead (no update; under a distribution strategy its gradient is zeroed on every
            replica, so only AdamW's momentum and weight decay move the weights), halves the
            learning rate, and stops after N skipped batches in the stage.
        seed: with the stage name and the optimizer step, sets every dropout mask (see
            `reseed`; single-device only: under a distribution strategy each replica's dropout
            streams are its own, so a resumed stage is close to, not equal to, an
            uninterrupted one).
    """

    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    reduce_lr_on_plateau: bool = False
    xla: bool = False
    verbose: bool = True
    checkpoint_every: int = 0
    distribution: tf.distribute.Strategy | None = None
    skip_nonfinite: int = 0
    seed: int = 0


def make_train_step(model, objective: str, settings: LossSettings, variables, optimizer, *,
                    distribution: tf.distribute.Strategy | None = None, skip_nonfinite: int = 0,
                    before_step: Callable[[], None] | None = None, signature=None,
                    xla: bool = False) -> Callable[[dict], tf.Tensor]:
    """`step(batch) -> losses`: forward, `objective`'s loss, gradients and one optimizer update
    of `variables`, compiled as one `tf.function`.

    `losses` is float32 `[1 + terms]`: the loss, then each of the objective's named terms
    (`objectives.Objective.term_names`; under a distribution strategy, each summed over
    replicas like the loss).

    Args:
        distribution, skip_nonfinite: see `LoopConfig`.
        before_step: called first inside the step (e.g. reseeding dropout from the step).
        signature: the batch's `TensorSpec`s (one trace for every batch shape), or None.
        xla: compile with XLA.

    Every `tf.function` of the package is traced with `autograph=False`: the step, the models
    and the losses use TensorFlow control flow (`tf.cond`, `tf.while_loop`) where it depends on
    values, and converting Hugging Face's and Keras' Python for each stage's trace doubled a
    smoke run's time.
    """
    scaled = isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)

    def replica_step(batch):
        if before_step is not None:
            before_step()
        with tf.GradientTape() as tape:
            terms = list(objectives.loss_terms(model, objective, settings, batch,
                                               training=True).values())
            loss = tf.add_n(terms)
            values = tf.stack([loss] + terms)
            if distribution:
                weight = objectives.objective_weight(model, objective, settings, batch)
                total = tf.distribute.get_replica_context().all_reduce("sum", weight)
                share = tf.math.divide_no_nan(weight, total)
                loss, values = loss * share, values * share
            if scaled:
                loss = optimizer.get_scaled_loss(loss)
        grads = tape.gradient(loss, variables)
        if scaled:
            grads = optimizer.get_unscaled_gradients(grads)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        if not skip_nonfinite:
            optimizer.apply_gradients(pairs)
            return values
        finite = tf.math.is_finite(loss)
        for g, _ in pairs if not scaled else ():  # overflowing scaled gradients: its own skip
            grad = g.values if isinstance(g, tf.IndexedSlices) else g
            finite &= tf.reduce_all(tf.math.is_finite(grad))
        if distribution is None:
            def apply():
                optimizer.apply_gradients(pairs)  # (a LossScaleOptimizer's returns nothing)
                return tf.identity(optimizer.iterations)
            tf.cond(finite, apply, lambda: tf.identity(optimizer.iterations))
            return values
        bad = tf.distribute.get_replica_context().all_reduce(
            "sum", 1.0 - tf.cast(finite, tf.float32))  # any replica's NaN skips the batch
        optimizer.apply_gradients([(_zero_unless(bad == 0, g), v) for g, v in pairs])
        return values

    if distribution is None:
        return tf.function(replica_step, input_signature=[signature] if signature else None,
                           jit_compile=xla, autograph=False)

    @tf.function(reduce_retracing=True, jit_compile=xla, autograph=False)
    def distributed_step(batch):
        losses_ = distribution.run(replica_step, args=(batch,))
        return distribution.reduce("sum", losses_, axis=None)

    return lambda batch: distributed_step(distribute.split_batch(distribution, batch))


def run_stage(
    model,
    stage: stages_lib.Stage,
    train_batches: BatchesFn,
    monitor: Callable[[], float],
    settings: LossSettings | None = None,
    loop: LoopConfig = LoopConfig(),
    *,
    log_dir: str | None = None,
    checkpoint_dir: str | None = None,
    baseline: float = -math.inf,
) -> StageResult:
    """Trains `model` for one stage with early stopping on `monitor`.

    Args:
        model: a `TokenClassifier`.
        stage: the stage.
        train_batches: epoch -> list of batches (reshuffled per epoch, deterministic).
        monitor: evaluates the current model on dev; higher is better (negate losses).
        settings: loss settings for the objectives (`objectives.LossSettings`).
        loop: the optimizer's and the loop's settings (`LoopConfig`).
        log_dir: TensorBoard folder for this stage (None: no logs).
        checkpoint_dir: if set, the stage is checkpointed there (model, optimizer, data position,
            best weights, early-stopping state) after every epoch and every
            `loop.checkpoint_every` steps, and a later call with the same folder continues from
            the last checkpoint.
        baseline: the monitor value of the model as it enters the stage (e.g. the best dev F1 of
            the stages before); if no epoch beats it, the entering weights are kept.

    Returns:
        The stage's history; the model holds the best dev weights on return.

    Raises:
        FloatingPointError: the loss became NaN or infinite (the last checkpoint is kept).
    """
    t0 = time.time()
    settings = settings or LossSettings()
    distribution = loop.distribution
    variables = stage_variables(model, stage)
    steps_per_epoch = len(train_batches(0))
    with distribution.scope() if distribution else contextlib.nullcontext():
        optimizer, schedule = make_optimizer(variables, stage.learning_rate,
                                             steps_per_epoch * stage.max_epochs,
                                             loop.warmup_ratio, loop.weight_decay)
    keys = objectives.batch_keys(stage.objective)
    term_names = objectives.get(stage.objective).term_names
    generators = [] if distribution else dropout_generators(model, train_batches(0)[0])
    stage_seed = (loop.seed * 1_000_003 + zlib.crc32(stage.name.encode())) % 2**62
    train_step = make_train_step(
        model, stage.objective, settings, variables, optimizer, distribution=distribution,
        skip_nonfinite=loop.skip_nonfinite, xla=loop.xla,
        before_step=lambda: reseed(generators, stage_seed, optimizer.iterations),
        signature={k: tf.TensorSpec(v.shape, v.dtype) for k, v in
                   features.to_dataset(train_batches(0), keys).element_spec.items()})

    progress = ckpt_lib.Progress(baseline, len(term_names))
    best = ckpt_lib.BestWeights(model, distribute.worker_folder(distribution, checkpoint_dir),
                                progress)
    checkpoints = ckpt_lib.StageCheckpoints(best.folder, loop.checkpoint_every, model,
                                            optimizer, progress, schedule, best)
    if checkpoints.restore() and loop.verbose:
        print(f"  [{stage.name}] resuming at epoch {_value(progress.epoch) + 1}, batch "
              f"{_value(progress.step) + 1}", file=sys.stderr, flush=True)
    if baseline > -math.inf and best.empty:
        best.save(0)  # the entering weights are the ones to beat
    writer = tf.summary.create_file_writer(log_dir) if log_dir else None
    kill_at = ckpt_lib.kill_step(stage.name)
    history = json.loads(progress.history.numpy().decode())
    skipped = 0
    while (_value(progress.epoch) < stage.max_epochs
           and _value(progress.waited) < stage.patience):
        epoch = _value(progress.epoch)
        e0 = time.time()
        batches = train_batches(epoch)[_value(progress.step):]
        if not batches:  # the crash came after the last batch
            feed = ()
        elif distribution is None:
            feed = features.to_dataset(batches, keys)
        else:
            feed = ({k: b[k] for k in keys} for b in batches)
        for batch in feed:
            values = train_step(batch).numpy()
            loss = float(values[0])
            if not math.isfinite(loss) and skipped < loop.skip_nonfinite:
                skipped += 1
                schedule.scale.assign(schedule.scale * 0.5)
                print(f"  [{stage.name}] warning: loss {loss} at batch {_value(progress.step) + 1}"
                      f" of epoch {epoch + 1}: batch skipped, learning rate halved "
                      f"({skipped}/{loop.skip_nonfinite} skips)", file=sys.stderr, flush=True)
                progress.step.assign_add(1)
                continue
            if not math.isfinite(loss):
                more = (f"{skipped} batches were skipped already; " if loop.skip_nonfinite else
                        "--skip_nonfinite_batches=N skips such batches, or ")
                raise FloatingPointError(
                    f"stage {stage.name}: loss became {loss} in epoch {epoch + 1}; {more}lower "
                    "the learning rate (the last checkpoint is kept)"
                )
            progress.loss_sum.assign_add(loss)
            progress.term_sums.assign_add(values[1:].astype(np.float64))
            progress.step.assign_add(1)
            checkpoints.after_step()
            if kill_at == _value(optimizer.iterations):
                os.kill(os.getpid(), signal.SIGKILL)  # fault injection (`ckpt_lib.KILL_AT_ENV`)
        value = monitor()
        steps = max(_value(progress.step), 1)
        row = {"stage": stage.name, "epoch": epoch + 1,
               "train_loss": _value(progress.loss_sum) / steps,
               "train_terms": dict(zip(term_names, (float(x) / steps for x in
                                                    progress.term_sums.numpy()))),
               stage.monitor: -value if stage.monitor == "dev_loss" else value,
               "seconds": time.time() - e0, "peak_rss_mb": peak_rss_mb()}
        history.append(row)
        improved = value > _value(progress.best)
        if loop.verbose:
            terms = (" (" + ", ".join(f"{k} {v:.4g}" for k, v in row["train_terms"].items())
                     + ")" if len(term_names) > 1 else "")
            print(f"  [{stage.name}] epoch {epoch + 1}/{stage.max_epochs} "
                  f"loss {row['train_loss']:.4f}{terms} {stage.monitor} "
                  f"{row[stage.monitor]:.4f}{' *' if improved else ''} ({row['seconds']:.1f}s)",
                  file=sys.stderr, flush=True)
        if writer:
            with writer.as_default(step=epoch + 1):
                tf.summary.scalar("train_loss", row["train_loss"])
                for name, term in row["train_terms"].items():
                    tf.summary.scalar(f"train_loss/{name}", term)
                tf.summary.scalar(stage.monitor, row[stage.monitor])
        if improved:
            progress.best.assign(value)
            progress.best_epoch.assign(epoch + 1)
            progress.waited.assign(0)
            best.save(epoch + 1)
        else:
            progress.waited.assign_add(1)
            if loop.reduce_lr_on_plateau:
                schedule.scale.assign(schedule.scale * 0.5)
        progress.history.assign(json.dumps(history))
        progress.epoch.assign_add(1)
        progress.step.assign(0)
        progress.loss_sum.assign(0.0)
        progress.term_sums.assign(tf.zeros_like(progress.term_sums))
        checkpoints.after_epoch()
    best.restore()
    if writer:
        writer.close()
    return StageResult(stage.name, history, _value(progress.best),
                       _value(progress.best_epoch), time.time() - t0)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux and macOS units differ)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def epoch_batches(make: Callable[[int], Sequence[dict]]) -> BatchesFn:
    """Caches the batch list of the last requested epoch (the loop asks for epoch 0 twice)."""
    cache: dict[int, Sequence[dict]] = {}

    def get(epoch: int):
        if epoch not in cache:
            cache.clear()
            cache[epoch] = make(epoch)
        return cache[epoch]

    return get


def mean_loss(model, objective: str, settings: LossSettings, batches: Sequence[dict]) -> float:
    """Average loss over batches, weighted by counted words (for dev-loss monitoring)."""
    keys = objectives.batch_keys(objective)

    @tf.function(input_signature=[features.to_dataset(batches, keys).element_spec],
                 autograph=False)
    def step(batch):
        return objectives.objective_loss(model, objective, settings, batch, training=False)

    total, weight = 0.0, 0.0
    for batch in batches:
        w = float(np.sum(batch["word_mask"]))
        total += float(step({k: batch[k] for k in keys})) * w
        weight += w
    return total / weight if weight else 0.0
