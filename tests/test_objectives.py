"""Objectives as data: declared keys and terms, and losses that are the sum of their terms."""

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
