"""Objectives as data: declared keys and terms, and losses that are the sum of their terms."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from xtremedistil_tf import benchmark_modes, models, objectives, stages
from conftest import MODELS

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


@pytest.fixture(scope="module")
def teacher():
    model, _, _ = models.build_teacher(os.path.join(MODELS, "tiny_bert"), LABELS, 0.0,
                                       aux_from_layer=1)
    return model


def test_every_stage_objective_is_registered_with_its_keys():
    assert set(stages.OBJECTIVES) == set(objectives.REGISTRY)
    for name, objective in objectives.REGISTRY.items():
        keys = objectives.batch_keys(name)
        assert keys[:4] == objectives.BASE_KEYS and len(set(keys)) == len(keys)
        assert objective.term_names and objective.counts in ("words", "labels")
    with pytest.raises(ValueError, match="unknown objective 'nope'"):
        objectives.get("nope")


@pytest.mark.parametrize("name", ["representations", "logits", "labels"])
def test_the_loss_is_the_sum_of_its_named_terms(teacher, name):
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 90, (2, 6)).astype(np.int32)
    batch = {"input_ids": tf.constant(ids), "attention_mask": tf.ones((2, 6), tf.int32),
             **benchmark_modes.random_targets(name, rng, 2, 6, len(LABELS), teacher.hidden_size)}
    settings = objectives.LossSettings(aux_weight=0.5)
    terms = objectives.loss_terms(teacher, name, settings, batch, training=False)
    assert tuple(terms) == objectives.get(name).term_names
    assert all(float(v) > 0 for v in terms.values()), terms  # the aux term too, for labels
    total = float(objectives.objective_loss(teacher, name, settings, batch, training=False))
    assert total == pytest.approx(sum(float(v) for v in terms.values()), rel=1e-6)
    if name == "labels":  # a switched-off term is there, as zero
        off = objectives.loss_terms(teacher, name, objectives.LossSettings(aux_weight=0.0),
                                    batch, training=False)
        assert float(off["aux_layers"]) == 0.0
        assert float(off["labels"]) == pytest.approx(float(terms["labels"]), rel=1e-6)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_tsl_learns_the_teachers_distributions_at_the_target_temperature(teacher, temperature):
    rng = np.random.default_rng(1)
    ids = rng.integers(5, 90, (2, 6)).astype(np.int32)
    inputs = {"input_ids": tf.constant(ids), "attention_mask": tf.ones((2, 6), tf.int32)}
    batch = {**inputs, **benchmark_modes.random_targets("tsl", rng, 2, 6, len(LABELS),
                                                          teacher.hidden_size)}
    student = teacher(inputs, training=False)["logits"].numpy()  # every sub-word is a word
    target = _softmax(batch["teacher_logits"].numpy() / temperature)
    expected = np.mean((_softmax(student) - target) ** 2)
    settings = objectives.LossSettings(target_temperature=temperature)
    got = objectives.loss_terms(teacher, "tsl", settings, batch, training=False)["prob_mse"]
    assert float(got) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["msd", "mtmt"])
def test_msd_and_mtmt_sharpen_every_teacher_distribution_they_learn(teacher, name):
    """T = 0.5 is the published loss on the teacher's logits doubled, for every term."""
    rng = np.random.default_rng(2)
    ids = rng.integers(5, 90, (2, 6)).astype(np.int32)
    k, aux = len(LABELS), len(teacher.aux_layers)
    batch = {"input_ids": tf.constant(ids), "attention_mask": tf.ones((2, 6), tf.int32),
             "word_index": tf.constant(np.tile(np.arange(6, dtype=np.int32), (2, 1))),
             "word_mask": tf.ones((2, 6)),
             "teacher_logits": tf.constant(rng.standard_normal((2, 6, k)), tf.float32),
             "teacher_aux_logits": tf.constant(rng.standard_normal((2, 6, aux, k)), tf.float32),
             "teacher_sim": tf.constant(rng.standard_normal((2, 6, teacher.hidden_size)),
                                        tf.float32)}
    doubled = {**batch, "teacher_logits": 2 * batch["teacher_logits"],
               "teacher_aux_logits": 2 * batch["teacher_aux_logits"]}
    settings = objectives.LossSettings(aux_targets=tuple(range(aux)), mmd_weight=0.0)
    sharp = objectives.loss_terms(teacher, name, dataclasses.replace(
        settings, target_temperature=0.5), batch, training=False)
    plain = objectives.loss_terms(teacher, name, settings, batch, training=False)
    published = objectives.loss_terms(teacher, name, settings, doubled, training=False)
    for term in sharp:
        assert float(sharp[term]) == pytest.approx(float(published[term]), rel=1e-5), term
    moved = [t for t in sharp if abs(float(sharp[t]) - float(plain[t])) > 1e-6]
    assert moved == (["output", "layers"] if name == "msd" else ["similarity", "recognition"])
