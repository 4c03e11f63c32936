"""What each benchmark mode runs: the serving computation as eager, `tf.function`, XLA or a
loaded SavedModel (`make_callable`), and one optimizer step of a distillation stage on random
targets (`make_train_step`, `random_targets`, `train_callable`)."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from xtremedistil_tf import benchmark_models as bm


class NoTokenizer:
    """Stands in for a tokenizer in `export.export`: random presets have none to save."""

    def save_pretrained(self, folder):
        with open(os.path.join(folder, "NO_TOKENIZER"), "w") as f:
            f.write("benchmark export of a random-weight preset; no tokenizer\n")


def forward_fn(model):
    """The serving computation (see `savedmodel._Tagger._forward`) without the input checks."""

    def forward(input_ids, attention_mask):
        logits = model({"input_ids": input_ids, "attention_mask": attention_mask},
                       training=False)["logits"]
        return {"label_ids": model.decode(logits, input_ids, attention_mask),
                "probabilities": model.probabilities(logits, input_ids, attention_mask)}

    return forward


def make_callable(model, mode: str, workdir: str):
    """`fn(input_ids, attention_mask) -> dict of tensors` for a mode (SavedModel: exported here)."""
    forward = forward_fn(model)
    if mode == "eager":
        return forward
    if mode == "function":
        return tf.function(forward, autograph=False)
    if mode == "xla":
        return tf.function(forward, jit_compile=True, autograph=False)

    from xtremedistil_tf import savedmodel

    labels = ["O"] + [f"{p}-{t}" for t in ("PER", "ORG", "LOC", "MISC") for p in "BI"]
    path = savedmodel.export(model, labels[:bm.NUM_LABELS], NoTokenizer(), workdir, model.name,
                             version=1, max_seq_length=max(8, savedmodel.max_positions(model)))
    serving = tf.saved_model.load(path).signatures["serving_default"]
    return lambda input_ids, attention_mask: serving(input_ids=input_ids,
                                                     attention_mask=attention_mask)


# --------------------------------------------------------------------------- training steps


def make_train_step(model, objective: str, steps: int, fused: bool = True):
    """`step(batch) -> loss`: one optimizer step of the `objective` distillation stage.

    The pieces `train.run_stage` assembles, without a pipeline: the stage from
    `stages.build_schedule` (default `DistilConfig`, no gradual unfreezing, so every layer of
    the stage trains: representations = embeddings, blocks and projection; logits and labels =
    embeddings, blocks and head), its variables (`train.stage_variables`), the stage's optimizer
    (`train.make_optimizer`: AdamW, LayerNorm and biases not decayed, warm-up/decay over
    `steps`) and the training step itself (`train.make_train_step`: forward, loss with
    dropout, gradients and the AdamW update in one `tf.function`). Left out: the `tf.data`
    feed, distribution strategies, NaN skipping, dropout reseeding and checkpoints.
    `fused=False`: Keras' own AdamW instead of `adamw.AdamW` (`scripts/bench_adamw.py`).
    """
    from xtremedistil_tf import config as config_lib, objectives, stages, train

    distil = config_lib.DistilConfig(stages=(objective,), gradual_unfreezing=False)
    (stage,) = stages.build_schedule(distil, model.num_blocks, freeze_embeddings=False)
    variables = train.stage_variables(model, stage)
    optimizer, _ = train.make_optimizer(variables, stage.learning_rate, steps,
                                        distil.warmup_ratio, distil.weight_decay, fused=fused)
    settings = objectives.LossSettings(logit_loss=distil.logit_loss)
    return train.make_train_step(model, objective, settings, variables, optimizer)


def random_targets(objective: str, rng, batch: int, length: int, num_labels: int,
                   teacher_width: int) -> dict:
    """The batch entries besides the inputs that `objective` reads, random, shaped as
    `features.make_batches` pads them, with every sub-word a word: cached teacher hidden states
    (`[B, T, 1, H_teacher]`, float32 as `features.pad_batch` hands the cache's float16 to the step),
    teacher logits (`[B, T, K]`) or gold label ids."""
    from xtremedistil_tf import objectives

    every = {
        "word_index": np.tile(np.arange(length, dtype=np.int32), (batch, 1)),
        "word_mask": np.ones((batch, length), np.float32),
        "teacher_hidden": rng.standard_normal((batch, length, 1, teacher_width)).astype(
            np.float32),
        "teacher_logits": rng.standard_normal((batch, length, num_labels)).astype(np.float32),
        "token_labels": rng.integers(0, num_labels, (batch, length)).astype(np.int32),
        "token_first": np.ones((batch, length), np.float32),
    }
    keys = [k for k in objectives.batch_keys(objective) if k not in ("input_ids", "attention_mask")]
    return {k: tf.constant(every[k]) for k in keys}


def train_callable(step, targets: dict):
    """`fn(input_ids, attention_mask) -> {"loss": ...}`: one `step` (from `make_train_step`) on
    the inputs and `targets`."""
    return lambda input_ids, attention_mask: {"loss": step(
        {"input_ids": input_ids, "attention_mask": attention_mask, **targets})[0]}
