"""Training objectives as data: what each stage's loss reads, and its loss as named terms.

An `Objective` says which batch entries it reads (`keys`, beyond the inputs and the word
alignment every batch has), whether the model must return its hidden states, and computes its
loss as named terms (`terms(model, settings, batch, out, training) -> {name: scalar}`, every
name in `term_names`, zero when a setting switches it off). The stage loss is their sum; the
training loop logs each term per epoch (history, curves, TensorBoard), so a run shows which
parts of a distiller were active and how large they were.

Adding a distiller: `register(Objective(...))` below (its terms from `losses`), a stage that
uses it (`stages`), and its flagfile.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import tensorflow as tf

from xtremedistil_tf import losses

BASE_KEYS = ("input_ids", "attention_mask", "word_index", "word_mask")


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
        target_temperature: TSL, MSD, MTMT learn softmax(teacher logits / T) (`DistilConfig`).
        label_types: label id -> entity type id (B-PER and I-PER share one; O has its own), for
            the similarity teacher's same-type pairs.
        class_weights: per label id, the weight of its positions in the gold-label
            cross-entropy (`class_weights_for`); empty = all 1.
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
    target_temperature: float = 1.0
    label_types: tuple[int, ...] = ()
    class_weights: tuple[float, ...] = ()


def class_weights_for(labels, o_weight: float, head=None) -> tuple[float, ...]:
    """Label weights for the gold-label loss: `o_weight` for O, 1 for entity labels; empty (no
    weighting) when `o_weight` is 1 or `head` has a CRF (it scores whole tag sequences)."""
    if o_weight == 1.0 or getattr(head, "crf", None) is not None:
        return ()
    return tuple(o_weight if label == "O" else 1.0 for label in labels)


TermsFn = Callable[..., dict]


@dataclasses.dataclass(frozen=True)
class Objective:
    """One training objective (see the module doc).

    Attributes:
        name: what stages call it.
        keys: batch entries it reads besides `BASE_KEYS`.
        term_names: the names of its loss terms, in logging order.
        terms: `(model, settings, batch, out, training) -> {name: float32 scalar}`.
        hidden_states: the model call must return `hidden_states`.
        counts: what the loss averages over, for weighting replicas under tf.distribute:
            `words` (word positions with a target) or `labels` (positions with a gold label).
    """

    name: str
    keys: tuple[str, ...]
    term_names: tuple[str, ...]
    terms: TermsFn
    hidden_states: bool = False
    counts: str = "words"


REGISTRY: dict[str, Objective] = {}


def register(objective: Objective) -> Objective:
    REGISTRY[objective.name] = objective
    return objective


def get(name: str) -> Objective:
    if name not in REGISTRY:
        raise ValueError(f"unknown objective {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def batch_keys(name: str) -> tuple[str, ...]:
    """The batch entries an objective reads (others are not fed, to avoid retracing)."""
    return BASE_KEYS + get(name).keys


def loss_terms(model, name: str, settings: LossSettings, batch: dict,
               training: bool) -> dict[str, tf.Tensor]:
    """The objective's named loss terms on one batch (float32 scalars, `term_names` order)."""
    objective = get(name)
    out = model({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]},
                training=training, output_hidden_states=objective.hidden_states)
    terms = objective.terms(model, settings, batch, out, training)
    if tuple(terms) != objective.term_names:
        raise RuntimeError(f"objective {name} returned terms {tuple(terms)}, declared "
                           f"{objective.term_names}")
    return {k: tf.cast(v, tf.float32) for k, v in terms.items()}


def objective_loss(model, name: str, settings: LossSettings, batch: dict, training: bool):
    """The stage loss of one batch: the sum of its terms (a scalar tensor)."""
    return tf.add_n(list(loss_terms(model, name, settings, batch, training).values()))


def objective_weight(model, name: str, settings: LossSettings, batch: dict) -> tf.Tensor:
    """How many positions the objective's loss on `batch` averages over (float32 scalar).

    Under tf.distribute every replica scales its mean loss by its share of the global count, so
    the summed gradients equal those of one device on the whole batch (sum over positions /
    global count, not a mean of per-replica means).
    """
    if get(name).counts == "labels":
        valid = batch["token_labels"] >= 0
        if model.head.crf is not None:
            counted = valid & model.token_mask(batch["input_ids"], batch["attention_mask"])
        elif settings.label_all_subwords:
            counted = valid
        else:
            counted = valid & (batch["token_first"] > 0)
        return tf.reduce_sum(tf.cast(counted, tf.float32))
    return tf.reduce_sum(tf.cast(batch["word_mask"] > 0, tf.float32))


# --------------------------------------------------------------------------- XtremeDistil


def _representations(model, settings, batch, out, training):
    hidden = out["hidden_states"]
    student = tf.stack(
        [model.project(losses.gather_words(hidden[i], batch["word_index"]))
         for i in settings.student_layers],
        axis=2,
    )  # [B, W, n, H_teacher]
    shape = tf.shape(student)
    flat = tf.reshape(student, [shape[0], shape[1], -1])
    target = tf.reshape(batch["teacher_hidden"], [shape[0], shape[1], -1])
    return {"hidden_mse": losses.mse(flat, target, batch["word_mask"])}


def _logits(model, settings, batch, out, training):
    student = losses.gather_words(out["logits"], batch["word_index"])
    loss = losses.get(settings.logit_loss, settings.temperature)
    return {"logits": loss(student, batch["teacher_logits"], batch["word_mask"])}


def _labels(model, settings, batch, out, training):
    labels = batch["token_labels"]
    class_weights = settings.class_weights or None
    token_mask = model.token_mask(batch["input_ids"], batch["attention_mask"])
    loss = model.head.loss(out["logits"], labels, token_mask, batch["token_first"],
                           settings.label_all_subwords, class_weights)
    aux = tf.zeros([])
    if "aux_logits" in out and settings.aux_weight:
        counted = labels >= 0
        if not settings.label_all_subwords:
            counted &= batch["token_first"] > 0
        weights = tf.nn.softmax(model.aux_weights)
        aux = settings.aux_weight * tf.add_n(
            [weights[i] * losses.cross_entropy(logits, labels, counted, class_weights)
             for i, logits in enumerate(out["aux_logits"])])
    return {"labels": loss, "aux_layers": aux}


# --------------------------------------------------------------------------- cross-lingual


def _target(settings, teacher_logits):
    """The teacher's logits on target text, float32, at `target_temperature`."""
    logits = tf.cast(teacher_logits, tf.float32)
    return logits if settings.target_temperature == 1.0 else logits / settings.target_temperature


def _tsl(model, settings, batch, out, training):
    student = losses.gather_words(out["logits"], batch["word_index"])
    return {"prob_mse": losses.prob_mse(student, _target(settings, batch["teacher_logits"]),
                                        batch["word_mask"])}


def _msd(model, settings, batch, out, training):
    """MSD: the output distributions, every paired layer's, and two MMD² terms on [CLS]."""
    index, mask = batch["word_index"], batch["word_mask"]
    logits = losses.gather_words(out["logits"], index)
    terms = {"output": losses.prob_mse(logits, _target(settings, batch["teacher_logits"]), mask),
             "layers": tf.zeros([]), "mmd_target": tf.zeros([]),
             "mmd_source": tf.zeros([])}
    if settings.aux_targets and settings.msd_beta:
        weights = tf.nn.softmax(model.aux_weights)
        per_layer = [losses.prob_mse(losses.gather_words(x, index),
                                     _target(settings, batch["teacher_aux_logits"][:, :, k]),
                                     mask)
                     for x, k in zip(out["aux_logits"], settings.aux_targets, strict=True)]
        terms["layers"] = settings.msd_beta * tf.add_n(
            [weights[i] * x for i, x in enumerate(per_layer)])
    if settings.mmd_weight:
        source = model({"input_ids": batch["src_input_ids"],
                        "attention_mask": batch["src_attention_mask"]},
                       training=training, output_hidden_states=True)
        t_cls = batch["teacher_src_cls"]
        s_cls_target = model.project(out["hidden_states"][-1][:, 0])
        s_cls_source = model.project(source["hidden_states"][-1][:, 0])
        terms["mmd_target"] = settings.mmd_weight * losses.mmd2(t_cls, s_cls_target)  # languages
        terms["mmd_source"] = settings.mmd_weight * losses.mmd2(t_cls, s_cls_source)  # models
    return terms


def _mtmt(model, settings, batch, out, training):
    index, real = batch["word_index"], batch["word_mask"] > 0
    logits = losses.gather_words(out["logits"], index)
    return losses.mtmt_terms(
        tf.nn.softmax(tf.boolean_mask(logits, real), axis=-1),
        tf.nn.softmax(tf.boolean_mask(_target(settings, batch["teacher_logits"]), real)),
        tf.boolean_mask(losses.gather_words(out["hidden_states"][-1], index), real),
        tf.boolean_mask(batch["teacher_sim"], real), settings.mtmt_alpha)


def _similarity(model, settings, batch, out, training):
    """The similarity teacher: source words, labelled: same entity type or not."""
    index, real = batch["word_index"], batch["word_mask"] > 0
    vec = tf.boolean_mask(losses.gather_words(out["hidden_states"][-1], index), real)
    types = tf.gather(tf.constant(settings.label_types, tf.int32),
                      tf.maximum(tf.boolean_mask(batch["word_labels"], real), 0))
    j = losses.partners(tf.shape(vec)[0])
    pred = tf.sigmoid(losses.cosine_similarity(vec, tf.gather(vec, j)))
    return {"same_type_bce": losses.balanced_bce(pred, tf.equal(types, tf.gather(types, j)))}


register(Objective("representations", ("teacher_hidden",), ("hidden_mse",), _representations,
                   hidden_states=True))
register(Objective("logits", ("teacher_logits",), ("logits",), _logits))
register(Objective("labels", ("token_labels", "token_first"), ("labels", "aux_layers"), _labels,
                   counts="labels"))
register(Objective("tsl", ("teacher_logits",), ("prob_mse",), _tsl))
register(Objective("msd", ("teacher_logits", "teacher_aux_logits", "src_input_ids",
                           "src_attention_mask", "teacher_src_cls"),
                   ("output", "layers", "mmd_target", "mmd_source"), _msd, hidden_states=True))
register(Objective("mtmt", ("teacher_logits", "teacher_sim"),
                   ("similarity", "recognition"), _mtmt, hidden_states=True))
register(Objective("similarity", ("word_labels",), ("same_type_bce",), _similarity,
                   hidden_states=True))
