"""One training loop for every stage: teacher fine-tuning and each distillation stage.

A stage (see `stages.Stage`) says which loss, which data and which variables; this module turns it
into an AdamW optimizer with linear warm-up and decay, a compiled train step over the stage's
variables only, epoch-wise evaluation on dev, early stopping, and the best dev weights restored.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from xtremedistil_tf import features, losses, stages as stages_lib

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
        decay = tf.maximum(0.0, (self.total_steps - step) / max(1, self.total_steps - self.warmup_steps))
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
    """

    student_layers: tuple[int, ...] = (-1,)
    logit_loss: str = "mse"
    temperature: float = 1.0
    label_all_subwords: bool = False
    aux_weight: float = 0.1


def batch_keys(objective: str) -> tuple[str, ...]:
    """The batch entries an objective reads (others are not fed, to avoid retracing)."""
    base = ("input_ids", "attention_mask", "word_index", "word_mask")
    extra = {"representations": ("teacher_hidden",), "logits": ("teacher_logits",),
             "labels": ("token_labels", "token_first")}[objective]
    return base + extra


def objective_loss(model, objective: str, settings: LossSettings, batch: dict, training: bool):
    """The stage loss of one batch (a scalar tensor)."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    want_hidden = objective == "representations"
    out = model(inputs, training=training, output_hidden_states=want_hidden)
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
    if objective == "logits":
        student = losses.gather_words(out["logits"], batch["word_index"])
        fn = losses.get(settings.logit_loss, settings.temperature)
        return fn(student, batch["teacher_logits"], mask)
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

    Returns:
        The stage's history; the model holds the best dev weights on return.

    Raises:
        FloatingPointError: the loss became NaN or infinite.
    """
    t0 = time.time()
    variables = stage_variables(model, stage)
    steps_per_epoch = len(train_batches(0))
    total = steps_per_epoch * stage.max_epochs
    schedule = WarmupLinearDecay(stage.learning_rate, total, int(total * warmup_ratio))
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay)
    optimizer.exclude_from_weight_decay(var_names=["LayerNorm", "layer_norm", "bias"])
    optimizer.build(variables)
    keys = batch_keys(stage.objective)

    signature = {k: tf.TensorSpec(v.shape, v.dtype)
                 for k, v in features.to_dataset(train_batches(0), keys).element_spec.items()}

    @tf.function(input_signature=[signature], jit_compile=xla)
    def train_step(batch):
        with tf.GradientTape() as tape:
            loss = objective_loss(model, stage.objective, settings, batch, training=True)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, variables) if g is not None]
        )
        return loss

    writer = tf.summary.create_file_writer(log_dir) if log_dir else None
    best, best_epoch, waited = baseline, 0, 0
    best_weights = [v.numpy() for v in model.weights] if baseline > -math.inf else None
    history = []
    for epoch in range(stage.max_epochs):
        e0 = time.time()
        total_loss, n = 0.0, 0
        for batch in features.to_dataset(train_batches(epoch), keys):
            loss = float(train_step(batch))
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"stage {stage.name}: loss became {loss} in epoch {epoch + 1}; lower the "
                    "learning rate (the last finished stage's checkpoint is kept)"
                )
            total_loss, n = total_loss + loss, n + 1
        value = monitor()
        row = {"stage": stage.name, "epoch": epoch + 1, "train_loss": total_loss / max(n, 1),
               stage.monitor: -value if stage.monitor == "dev_loss" else value,
               "seconds": time.time() - e0}
        history.append(row)
        if writer:
            with writer.as_default(step=epoch + 1):
                tf.summary.scalar("train_loss", row["train_loss"])
                tf.summary.scalar(stage.monitor, row[stage.monitor])
        improved = value > best
        if verbose:
            print(f"  [{stage.name}] epoch {epoch + 1}/{stage.max_epochs} "
                  f"loss {row['train_loss']:.4f} {stage.monitor} {row[stage.monitor]:.4f}"
                  f"{' *' if improved else ''} ({row['seconds']:.1f}s)", file=sys.stderr,
                  flush=True)
        if improved:
            best, best_epoch, waited = value, epoch + 1, 0
            best_weights = [v.numpy() for v in model.weights]
        else:
            waited += 1
            if reduce_lr_on_plateau:
                schedule.scale.assign(schedule.scale * 0.5)
            if waited >= stage.patience:
                break
    if best_weights is not None:
        for v, w in zip(model.weights, best_weights):
            v.assign(w)
    if writer:
        writer.close()
    return StageResult(stage.name, history, best, best_epoch, time.time() - t0)


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
