"""Tagging heads: softmax, CRF and attention variants; loss, decoding, round trip and export."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from xtremedistil_tf import crf, crf_layer, heads, models, objectives, savedmodel
from conftest import MODELS

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
# [CLS]=2, [SEP]=3, [PAD]=0 in the tiny vocabulary.
IDS = tf.constant([[2, 40, 41, 42, 3, 0], [2, 43, 3, 0, 0, 0]])
MASK = tf.constant([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]])


def model(kind):
    m, _, _ = models.build_teacher(os.path.join(MODELS, "tiny_bert"), LABELS, 0.0, kind,
                                   special_ids=(0, 1, 2, 3, 4))
    # Make the CRF non-trivial so that decoding differs from argmax somewhere.
    if m.head.crf is not None:
        m.head.crf.transitions.assign(np.random.default_rng(0).normal(size=(5, 5)) * 3)
    return m


@pytest.mark.parametrize("kind", heads.HEADS)
def test_shapes_and_variable_groups(kind):
    m = model(kind)
    out = m({"input_ids": IDS, "attention_mask": MASK})
    assert out["logits"].shape == (2, 6, 5)
    names = {v.name.split("/")[-2] for v in m.variable_groups()["head"]}
    assert ("transitions:0" in {v.name.split("/")[-1] for v in m.variable_groups()["head"]}) == \
        kind.endswith("crf")
    assert ("attention" in " ".join(v.name for v in m.variable_groups()["head"])) == \
        kind.startswith("attention")
    assert names


def test_token_mask_skips_padding_and_specials():
    m = model("crf")
    assert m.token_mask(IDS, MASK).numpy().astype(int).tolist() == [
        [0, 1, 1, 1, 0, 0], [0, 1, 0, 0, 0, 0]]


def test_crf_loss_is_the_chain_nll_per_labelled_subword():
    m = model("crf")
    logits = m({"input_ids": IDS, "attention_mask": MASK})["logits"]
    labels = tf.constant([[-1, 1, 2, 0, -1, -1], [-1, 3, -1, -1, -1, -1]])
    first = tf.constant([[0, 1, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0]], tf.float32)
    token_mask = m.token_mask(IDS, MASK)
    got = float(m.head.loss(logits, labels, token_mask, first))
    layer = m.head.crf
    ll = crf.crf_log_likelihood(logits, labels, token_mask, layer.transitions, layer.start,
                                layer.end)
    assert got == pytest.approx(float(-tf.reduce_sum(ll) / 4.0), rel=1e-5)


def test_softmax_loss_counts_first_subwords_unless_all_asked():
    m = model("softmax")
    logits = m({"input_ids": IDS, "attention_mask": MASK})["logits"]
    labels = tf.constant([[-1, 1, 2, 0, -1, -1], [-1, 3, -1, -1, -1, -1]])
    first = tf.constant([[0, 1, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0]], tf.float32)
    lp = tf.nn.log_softmax(logits).numpy()
    ref_first = -np.mean([lp[0, 1, 1], lp[0, 3, 0], lp[1, 1, 3]])
    ref_all = -np.mean([lp[0, 1, 1], lp[0, 2, 2], lp[0, 3, 0], lp[1, 1, 3]])
    tm = m.token_mask(IDS, MASK)
    assert float(m.head.loss(logits, labels, tm, first)) == pytest.approx(ref_first, rel=1e-5)
    assert float(m.head.loss(logits, labels, tm, first, True)) == pytest.approx(ref_all, rel=1e-5)


def test_o_weight_scales_only_o_positions_and_a_crf_ignores_it():
    m = model("softmax")
    logits = m({"input_ids": IDS, "attention_mask": MASK})["logits"]
    labels = tf.constant([[-1, 1, 2, 0, -1, -1], [-1, 0, -1, -1, -1, -1]])
    first = tf.constant([[0, 1, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0]], tf.float32)
    lp = tf.nn.log_softmax(logits).numpy()
    weights = objectives.class_weights_for(LABELS, 0.3)
    assert weights == (0.3, 1.0, 1.0, 1.0, 1.0)
    assert objectives.class_weights_for(LABELS, 1.0) == ()
    assert objectives.class_weights_for(LABELS, 0.3, model("crf").head) == ()  # ignored
    expected = -(lp[0, 1, 1] + 0.3 * lp[0, 3, 0] + 0.3 * lp[1, 1, 0]) / 3
    tm = m.token_mask(IDS, MASK)
    assert float(m.head.loss(logits, labels, tm, first, False, weights)) == pytest.approx(
        expected, rel=1e-5)
    crf_model = model("crf")
    with pytest.raises(ValueError, match="softmax heads"):
        crf_model.head.loss(logits, labels, tm, first, False, weights)


def test_prior_bias_makes_an_untrained_head_predict_the_label_frequencies():
    m = model("softmax")
    m.head.set_prior_bias([99, 0, 0, 0, 0])
    assert m.head.classifier.bias.numpy() == pytest.approx(np.log([100, 1, 1, 1, 1]) -
                                                           np.log(104), abs=1e-6)
    m.head.classifier.kernel.assign(tf.zeros_like(m.head.classifier.kernel))
    probs = tf.nn.softmax(m({"input_ids": IDS, "attention_mask": MASK})["logits"])[0, 1]
    assert probs.numpy() == pytest.approx(np.array([100, 1, 1, 1, 1]) / 104, abs=1e-6)
    with pytest.raises(ValueError, match="5 labels"):
        m.head.set_prior_bias([1, 2, 3])


def test_crf_decode_is_constrained_viterbi_over_real_subwords():
    m = model("attention_crf")
    logits = m({"input_ids": IDS, "attention_mask": MASK})["logits"]
    ids = m.decode(logits, IDS, MASK).numpy()
    token_mask = m.token_mask(IDS, MASK).numpy()
    allowed, start = crf_layer.iob2_allowed(LABELS)
    for row in range(2):
        path = [ids[row, t] for t in range(6) if token_mask[row, t]]
        assert start[path[0]]
        assert all(allowed[a, b] for a, b in zip(path, path[1:]))
    probs = m.probabilities(logits, IDS, MASK).numpy()
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", heads.HEADS)
def test_head_config_round_trip(kind):
    head = heads.TaggingHead(kind, 5, 32, 0.1, labels=LABELS)
    again = heads.TaggingHead.from_config(head.get_config())
    assert again.get_config() == head.get_config()


CLEAN_LOAD = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
fn = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
ids, mask = json.loads(sys.argv[2]), json.loads(sys.argv[3])
out = fn(input_ids=tf.constant(ids, tf.int32), attention_mask=tf.constant(mask, tf.int32))
print(json.dumps({k: v.numpy().tolist() for k, v in out.items()}))
"""


def test_crf_export_decodes_and_scores_like_a_brute_force_chain(tmp_path, tiny_tokenizer):
    from test_crf import brute_force

    m = model("attention_crf")
    rng = np.random.default_rng(0)  # non-zero chain scores: the CRF differs from argmax
    for weight in m.head.crf.weights:
        weight.assign(rng.normal(size=weight.shape).astype(np.float32))
    path = savedmodel.export(m, LABELS, tiny_tokenizer, str(tmp_path), "crf")
    proc = subprocess.run([sys.executable, "-c", CLEAN_LOAD, path, json.dumps(IDS.numpy().tolist()),
                           json.dumps(MASK.numpy().tolist())], capture_output=True, text=True,
                          cwd="/", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    # Independent reference: every path over the real sub-words, enumerated (test_crf).
    logits = m({"input_ids": IDS, "attention_mask": MASK})["logits"].numpy()
    token_mask = m.token_mask(IDS, MASK).numpy().astype(bool)
    allowed, start = crf_layer.iob2_allowed(LABELS)
    layer = m.head.crf
    _, best, _, _ = brute_force(logits, None, token_mask, layer.transitions.numpy(),
                                layer.start.numpy(), layer.end.numpy(), allowed, start)
    _, _, _, marginals = brute_force(logits, None, token_mask, layer.transitions.numpy(),
                                     layer.start.numpy(), layer.end.numpy())
    soft = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected_ids = np.where(token_mask, best, logits.argmax(-1))
    expected_probs = np.where(token_mask[..., None], marginals, soft)
    assert got["label_ids"] == expected_ids.tolist()
    np.testing.assert_allclose(got["probabilities"], expected_probs, atol=1e-5)
    assert np.abs(marginals - soft)[token_mask].max() > 1e-2  # the chain mattered


def test_per_layer_classifiers_loss_and_groups():
    from xtremedistil_tf import data, features, inference, losses, objectives

    m, _, _ = models.build_teacher(os.path.join(MODELS, "tiny_bert"), LABELS, 0.0,
                                   special_ids=(0, 1, 2, 3, 4), aux_from_layer=1)
    assert m.aux_layers == (1,)
    m.aux_weights.assign([0.3])
    assert "aux_weights" in " ".join(v.name for v in m.variable_groups()["aux"])
    out = m({"input_ids": IDS, "attention_mask": MASK})
    assert len(out["aux_logits"]) == 1 and out["aux_logits"][0].shape == (2, 6, 5)
    labels = tf.constant([[-1, 1, 2, 0, -1, -1], [-1, 3, -1, -1, -1, -1]])
    first = tf.constant([[0, 1, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0]], tf.float32)
    batch = {"input_ids": IDS, "attention_mask": MASK, "token_labels": labels,
             "token_first": first}
    got = float(objectives.objective_loss(m, "labels", objectives.LossSettings(aux_weight=0.5),
                                          batch, training=False))
    counted = (labels >= 0) & (first > 0)
    main = float(losses.cross_entropy(out["logits"], labels, counted))
    aux = float(losses.cross_entropy(out["aux_logits"][0], labels, counted))  # softmax([w]) = 1
    assert got == pytest.approx(main + 0.5 * aux, rel=1e-5)
    sents = [data.Sentence(("John", "visited"), None)]
    windows = features.make_windows(sents, m_tokenizer(), None, 16)
    batches = features.make_batches(windows, 4, 16, 0)
    forward = inference.make_forward(m, with_aux=True)
    word = inference.word_outputs(forward, batches, len(windows))
    assert word["aux_logits"][0].shape == (2, 1, 5)


def test_aux_from_layer_beyond_the_teacher_is_a_clear_error():
    with pytest.raises(ValueError, match="--aux_from_layer=4: the teacher has 2 blocks"):
        models.build_teacher(os.path.join(MODELS, "tiny_bert"), LABELS, 0.0, aux_from_layer=4)


def m_tokenizer():
    return models.load_tokenizer(os.path.join(MODELS, "tiny_bert"))
