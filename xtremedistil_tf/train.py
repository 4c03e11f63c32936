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
import sys
import time
import zlib
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from xtremedistil_tf import distribute, features, losses, stages as stages_lib

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


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """How objectives turn model outputs into a loss.

    Attributes:
        student_layers: indices into the student's `hidden_states` compared with the teacher's
            cached `teacher_hidden` (same order) in the representations objective.
        logit_loss: registered loss name for the logits objective (`mse` or `kl`).
        temperature: for `kl`.
        label_all_subwords: softmax heads learn labels on every sub-word, not only the first.
        aux_weight: weight of the per-layer classifiers' loss, `aux_weight · Σ softmax(ω)ᵢ CEᵢ`.
        aux_targets: MSD, for each student per-layer classifier the position of its teacher
            layer in the cached `teacher_aux_logits`.
        msd_beta, mmd_weight: MSD loss weights (see `DistilConfig`).
        mtmt_alpha: MTMT, weight of the similarity loss.
        label_types: label id -> entity type id (B-PER and I-PER share one; O has its own), for
            the similarity teacher's same-type pairs.
    """

    student_layers: tuple[int, ...] = (-1,)
    logit_loss: str = "mse"
    temperature: float = 1.0
    label_all_subwords: bool = False
    aux_weight: float = 0.1
    aux_targets: tuple[int, ...] = ()
    msd_beta: float = 0.1
    mmd_weight: float = 1e-3
    mtmt_alpha: float = 1.0
    label_types: tuple[int, ...] = ()


def batch_keys(objective: str) -> tuple[str, ...]:
    """The batch entries an objective reads (others are not fed, to avoid retracing)."""
    base = ("input_ids", "attention_mask", "word_index", "word_mask")
    extra = {"representations": ("teacher_hidden",), "logits": ("teacher_logits",),
             "labels": ("token_labels", "token_first"), "tsl": ("teacher_logits",),
             "msd": ("teacher_logits", "teacher_aux_logits", "src_input_ids",
                     "src_attention_mask", "teacher_src_cls"),
             "mtmt": ("teacher_logits", "teacher_sim"),
             "similarity": ("word_labels",)}[objective]
    return base + extra


def objective_loss(model, objective: str, settings: LossSettings, batch: dict, training: bool):
    """The stage loss of one batch (a scalar tensor)."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    want_hidden = objective in ("representations", "msd", "mtmt", "similarity")
    out = model(inputs, training=training, output_hidden_states=want_hidden)
    if objective in ("msd", "mtmt", "similarity"):
        return _cross_lingual_loss(model, objective, settings, batch, out, training)
    if objective == "labels":
        labels = batch["token_labels"]
        token_mask = model.token_mask(batch["input_ids"], batch["attention_mask"])
        loss = model.head.loss(out["logits"], labels, token_mask, batch["token_first"],
                               settings.label_all_subwords)
        if "aux_logits" in out and settings.aux_weight:
            counted = labels >= 0
            if not settings.label_all_subwords:
                counted &= batch["token_first"] > 0
            weights = tf.nn.softmax(model.aux_weights)
            aux = tf.add_n([weights[i] * losses.cross_entropy(logits, labels, counted)
                            for i, logits in enumerate(out["aux_logits"])])
            loss += settings.aux_weight * aux
        return loss
    mask = batch["word_mask"]
    if objective in ("logits", "tsl"):
        student = losses.gather_words(out["logits"], batch["word_index"])
        name = "prob_mse" if objective == "tsl" else settings.logit_loss
        return losses.get(name, settings.temperature)(student, batch["teacher_logits"], mask)
    hidden = out["hidden_states"]
    student = tf.stack(
        [model.project(losses.gather_words(hidden[i], batch["word_index"]))
         for i in settings.student_layers],
        axis=2,
    )  # [B, W, n, H_teacher]
    shape = tf.shape(student)
    flat = tf.reshape(student, [shape[0], shape[1], -1])
    target = tf.reshape(batch["teacher_hidden"], [shape[0], shape[1], -1])
    return losses.mse(flat, target, mask)


def objective_weight(model, objective: str, settings: LossSettings, batch: dict) -> tf.Tensor:
    """How many positions the objective's loss on `batch` averages over (float32 scalar).

    Under tf.distribute every replica scales its mean loss by its share of the global count, so
    the summed gradients equal those of one device on the whole batch (sum over positions /
    global count, not a mean of per-replica means).
    """
    if objective == "labels":
        valid = batch["token_labels"] >= 0
        if model.head.crf is not None:
            counted = valid & model.token_mask(batch["input_ids"], batch["attention_mask"])
        elif settings.label_all_subwords:
            counted = valid
        else:
            counted = valid & (batch["token_first"] > 0)
        return tf.reduce_sum(tf.cast(counted, tf.float32))
    return tf.reduce_sum(tf.cast(batch["word_mask"] > 0, tf.float32))


def _cross_lingual_loss(model, objective: str, settings: LossSettings, batch: dict, out: dict,
                        training: bool):
    """MSD, MTMT and the similarity teacher's losses (see `losses.mmd2`, `losses.mtmt_loss`)."""
    index, real = batch["word_index"], batch["word_mask"] > 0
    last = out["hidden_states"][-1]
    if objective == "similarity":  # source words, labelled: same entity type or not
        vec = tf.boolean_mask(losses.gather_words(last, index), real)
        types = tf.gather(tf.constant(settings.label_types, tf.int32),
                          tf.maximum(tf.boolean_mask(batch["word_labels"], real), 0))
        j = losses.partners(tf.shape(vec)[0])
        pred = tf.sigmoid(losses.cosine_similarity(vec, tf.gather(vec, j)))
        return losses.balanced_bce(pred, tf.equal(types, tf.gather(types, j)))
    logits = losses.gather_words(out["logits"], index)
    if objective == "mtmt":
        return losses.mtmt_loss(
            tf.nn.softmax(tf.boolean_mask(logits, real), axis=-1),
            tf.nn.softmax(tf.boolean_mask(tf.cast(batch["teacher_logits"], tf.float32), real)),
            tf.boolean_mask(losses.gather_words(last, index), real),
            tf.boolean_mask(batch["teacher_sim"], real), settings.mtmt_alpha)
    mask = batch["word_mask"]  # MSD: every layer's distributions on target text, then MMD
    loss = losses.prob_mse(logits, batch["teacher_logits"], mask)
    if settings.aux_targets and settings.msd_beta:
        weights = tf.nn.softmax(model.aux_weights)
        per_layer = [losses.prob_mse(losses.gather_words(x, index),
                                     batch["teacher_aux_logits"][:, :, k], mask)
                     for x, k in zip(out["aux_logits"], settings.aux_targets, strict=True)]
        loss += settings.msd_beta * tf.add_n([weights[i] * x for i, x in enumerate(per_layer)])
    if settings.mmd_weight:
        source = model({"input_ids": batch["src_input_ids"],
                        "attention_mask": batch["src_attention_mask"]},
                       training=training, output_hidden_states=True)
        s_cls_target = model.project(last[:, 0])
        s_cls_source = model.project(source["hidden_states"][-1][:, 0])
        t_cls = batch["teacher_src_cls"]
        loss += settings.mmd_weight * (losses.mmd2(t_cls, s_cls_target)      # cross-language
                                       + losses.mmd2(t_cls, s_cls_source))   # cross-model
    return loss


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


def _value(variable):
    """A scalar variable's value as a Python number (also for the mirrored variables of a
    tf.distribute scope, which `int()` does not accept)."""
    return variable.numpy().item()


class _Progress(tf.Module):
    """Where a stage is, saved in its checkpoint with the model and the optimizer."""

    def __init__(self, baseline: float):
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64)  # finished epochs
        self.step = tf.Variable(0, dtype=tf.int64)  # finished batches of the current epoch
        self.loss_sum = tf.Variable(0.0, dtype=tf.float64)
        self.best = tf.Variable(baseline, dtype=tf.float64)
        self.best_epoch = tf.Variable(0, dtype=tf.int64)
        self.waited = tf.Variable(0, dtype=tf.int64)
        self.history = tf.Variable("[]", dtype=tf.string)  # JSON rows of finished epochs
        self.best_path = tf.Variable("", dtype=tf.string)  # checkpoint of the best weights


def make_optimizer(variables, learning_rate: float, total_steps: int, warmup_ratio: float,
                   weight_decay: float):
    """AdamW over `variables` (LayerNorm weights and biases not decayed) with linear warm-up
    over `warmup_ratio` of `total_steps` and decay to 0; returns (optimizer, schedule)."""
    schedule = WarmupLinearDecay(learning_rate, total_steps, int(total_steps * warmup_ratio))
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay)
    optimizer.exclude_from_weight_decay(var_names=["LayerNorm", "layer_norm", "bias"])
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


def run_stage(
    model,
    stage: stages_lib.Stage,
    train_batches: BatchesFn,
    monitor: Callable[[], float],
    settings: LossSettings = LossSettings(),
    *,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    reduce_lr_on_plateau: bool = False,
    log_dir: str | None = None,
    xla: bool = False,
    verbose: bool = True,
    baseline: float = -math.inf,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 0,
    strategy: tf.distribute.Strategy | None = None,
    skip_nonfinite: int = 0,
    seed: int = 0,
) -> StageResult:
    """Trains `model` for one stage with early stopping on `monitor`.

    Args:
        model: a `TokenClassifier`.
        stage: the stage.
        train_batches: epoch -> list of batches (reshuffled per epoch, deterministic).
        monitor: evaluates the current model on dev; higher is better (negate losses).
        settings: loss settings for the objectives.
        weight_decay, warmup_ratio: AdamW settings (LayerNorm and biases are not decayed).
        reduce_lr_on_plateau: halve the learning rate after an epoch without improvement.
        log_dir: TensorBoard folder for this stage (None: no logs).
        xla: compile the train step with XLA.
        verbose: print one line per epoch.
        baseline: the monitor value of the model as it enters the stage (e.g. the best dev F1 of
            the stages before); if no epoch beats it, the entering weights are kept.
        checkpoint_dir: if set, the stage is checkpointed there (model, optimizer, data position,
            best weights, early-stopping state) after every epoch and every `checkpoint_every`
            steps, and a later call with the same folder continues from the last checkpoint.
        checkpoint_every: steps between mid-epoch checkpoints (0: only at epoch ends).
        strategy: a `tf.distribute.Strategy` whose scope created the model's variables: every
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

    Returns:
        The stage's history; the model holds the best dev weights on return.

    Raises:
        FloatingPointError: the loss became NaN or infinite (the last checkpoint is kept).
    """
    t0 = time.time()
    variables = stage_variables(model, stage)
    steps_per_epoch = len(train_batches(0))
    total = steps_per_epoch * stage.max_epochs
    with strategy.scope() if strategy else contextlib.nullcontext():
        optimizer, schedule = make_optimizer(variables, stage.learning_rate, total,
                                             warmup_ratio, weight_decay)
    keys = batch_keys(stage.objective)

    signature = {k: tf.TensorSpec(v.shape, v.dtype)
                 for k, v in features.to_dataset(train_batches(0), keys).element_spec.items()}

    generators = [] if strategy else dropout_generators(model, train_batches(0)[0])
    stage_seed = (seed * 1_000_003 + zlib.crc32(stage.name.encode())) % 2**62

    def replica_step(batch):
        reseed(generators, stage_seed, optimizer.iterations)
        with tf.GradientTape() as tape:
            loss = objective_loss(model, stage.objective, settings, batch, training=True)
            if strategy:
                weight = objective_weight(model, stage.objective, settings, batch)
                total = tf.distribute.get_replica_context().all_reduce("sum", weight)
                loss = tf.math.divide_no_nan(loss * weight, total)
        grads = tape.gradient(loss, variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        if not skip_nonfinite:
            optimizer.apply_gradients(pairs)
            return loss
        finite = tf.math.is_finite(loss)
        for g, _ in pairs:
            values = g.values if isinstance(g, tf.IndexedSlices) else g
            finite &= tf.reduce_all(tf.math.is_finite(values))
        if strategy is None:
            tf.cond(finite, lambda: optimizer.apply_gradients(pairs), lambda: optimizer.iterations)
            return loss
        bad = tf.distribute.get_replica_context().all_reduce(
            "sum", 1.0 - tf.cast(finite, tf.float32))  # any replica's NaN skips the batch
        optimizer.apply_gradients([(_zero_unless(bad == 0, g), v) for g, v in pairs])
        return loss

    if strategy is None:
        train_step = tf.function(replica_step, input_signature=[signature], jit_compile=xla)
    else:
        @tf.function(reduce_retracing=True, jit_compile=xla)
        def distributed_step(batch):
            losses_ = strategy.run(replica_step, args=(batch,))
            return strategy.reduce("sum", losses_, axis=None)

        def train_step(batch):
            return distributed_step(distribute.split_batch(strategy, batch))

    progress = _Progress(baseline)
    checkpoint_dir = distribute.worker_folder(strategy, checkpoint_dir)
    best = _BestWeights(model, checkpoint_dir, progress)
    manager = None
    if checkpoint_dir:
        ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, progress=progress,
                                   lr_scale=schedule.scale)
        manager = tf.train.CheckpointManager(ckpt, checkpoint_dir, max_to_keep=1)
        if manager.latest_checkpoint:
            best.load()  # before the current state: it passes through the model's variables
            ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
            if verbose:
                print(f"  [{stage.name}] resuming at epoch {_value(progress.epoch) + 1}, batch "
                      f"{_value(progress.step) + 1}", file=sys.stderr, flush=True)
    if baseline > -math.inf and best.empty:
        best.save(0)  # the entering weights are the ones to beat
    writer = tf.summary.create_file_writer(log_dir) if log_dir else None
    history = json.loads(progress.history.numpy().decode())
    skipped = 0
    while (_value(progress.epoch) < stage.max_epochs
           and _value(progress.waited) < stage.patience):
        epoch = _value(progress.epoch)
        e0 = time.time()
        done = _value(progress.step)
        batches = train_batches(epoch)[done:]  # empty if the crash came after the last batch
        if not batches:  # the crash came after the last batch
            feed = ()
        elif strategy is None:
            feed = features.to_dataset(batches, keys)
        else:
            feed = ({k: b[k] for k in keys} for b in batches)
        for batch in feed:
            loss = float(train_step(batch))
            if not math.isfinite(loss) and skipped < skip_nonfinite:
                skipped += 1
                schedule.scale.assign(schedule.scale * 0.5)
                print(f"  [{stage.name}] warning: loss {loss} at batch {_value(progress.step) + 1}"
                      f" of epoch {epoch + 1}: batch skipped, learning rate halved "
                      f"({skipped}/{skip_nonfinite} skips)", file=sys.stderr, flush=True)
                progress.step.assign_add(1)
                continue
            if not math.isfinite(loss):
                more = (f"{skipped} batches were skipped already; " if skip_nonfinite else
                        "--skip_nonfinite_batches=N skips such batches, or ")
                raise FloatingPointError(
                    f"stage {stage.name}: loss became {loss} in epoch {epoch + 1}; {more}lower "
                    "the learning rate (the last checkpoint is kept)"
                )
            progress.loss_sum.assign_add(loss)
            progress.step.assign_add(1)
            if (manager and checkpoint_every
                    and _value(optimizer.iterations) % checkpoint_every == 0):
                manager.save()
        value = monitor()
        row = {"stage": stage.name, "epoch": epoch + 1,
               "train_loss": _value(progress.loss_sum) / max(_value(progress.step), 1),
               stage.monitor: -value if stage.monitor == "dev_loss" else value,
               "seconds": time.time() - e0, "peak_rss_mb": peak_rss_mb()}
        history.append(row)
        improved = value > _value(progress.best)
        if verbose:
            print(f"  [{stage.name}] epoch {epoch + 1}/{stage.max_epochs} "
                  f"loss {row['train_loss']:.4f} {stage.monitor} {row[stage.monitor]:.4f}"
                  f"{' *' if improved else ''} ({row['seconds']:.1f}s)", file=sys.stderr,
                  flush=True)
        if writer:
            with writer.as_default(step=epoch + 1):
                tf.summary.scalar("train_loss", row["train_loss"])
                tf.summary.scalar(stage.monitor, row[stage.monitor])
        if improved:
            progress.best.assign(value)
            progress.best_epoch.assign(epoch + 1)
            progress.waited.assign(0)
            best.save(epoch + 1)
        else:
            progress.waited.assign_add(1)
            if reduce_lr_on_plateau:
                schedule.scale.assign(schedule.scale * 0.5)
        progress.history.assign(json.dumps(history))
        progress.epoch.assign_add(1)
        progress.step.assign(0)
        progress.loss_sum.assign(0.0)
        if manager:
            manager.save()
    best.restore()
    if writer:
        writer.close()
    return StageResult(stage.name, history, _value(progress.best),
                       _value(progress.best_epoch),
                       time.time() - t0)


class _BestWeights:
    """The best weights of a stage: in memory, and on disk when the stage is checkpointed."""

    def __init__(self, model, checkpoint_dir: str | None, progress: _Progress):
        self.model = model
        self.folder = checkpoint_dir
        self.progress = progress
        self.values = None

    @property
    def empty(self) -> bool:
        return self.values is None

    def save(self, epoch: int) -> None:
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
    keys = batch_keys(objective)

    @tf.function(input_signature=[features.to_dataset(batches, keys).element_spec])
    def step(batch):
        return objective_loss(model, objective, settings, batch, training=False)

    total, weight = 0.0, 0.0
    for batch in batches:
        w = float(np.sum(batch["word_mask"]))
        total += float(step({k: batch[k] for k in keys})) * w
        weight += w
    return total / weight if weight else 0.0
