"""Losses against straightforward numpy references, including masking."""

import numpy as np
import pytest
import tensorflow as tf

from xtremedistil_tf import losses

rng = np.random.default_rng(0)


def arrays(b=2, w=5, d=4):
    s = rng.normal(size=(b, w, d)).astype(np.float32)
    t = rng.normal(size=(b, w, d)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], np.float32)[:b, :w]
    return s, t, mask


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_mse_matches_reference_and_ignores_masked_words():
    s, t, mask = arrays()
    got = float(losses.mse(tf.constant(s), tf.constant(t), tf.constant(mask)))
    rows = [((s[i, j] - t[i, j]) ** 2).mean() for i, j in zip(*np.nonzero(mask))]
    assert got == pytest.approx(np.mean(rows), rel=1e-5)
    t2 = t.copy()
    t2[mask == 0] = 1e6  # padding must not matter
    assert float(losses.mse(tf.constant(s), tf.constant(t2), tf.constant(mask))) == pytest.approx(
        got, rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kl_matches_reference(temperature):
    s, t, mask = arrays()
    got = float(losses.kl_divergence(tf.constant(s), tf.constant(t), tf.constant(mask),
                                     temperature))
    pt, ps = log_softmax(t / temperature), log_softmax(s / temperature)
    per = (np.exp(pt) * (pt - ps)).sum(-1)
    expected = (per * mask).sum() / mask.sum() * temperature**2
    assert got == pytest.approx(expected, rel=1e-4)


def test_kl_is_zero_for_identical_logits():
    s, _, mask = arrays()
    assert float(losses.kl_divergence(tf.constant(s), tf.constant(s), tf.constant(mask), 2.0)) \
        == pytest.approx(0.0, abs=1e-6)


def test_cross_entropy_matches_reference_with_ignored_labels():
    logits = rng.normal(size=(2, 4, 3)).astype(np.float32)
    labels = np.array([[0, 2, -1, 1], [-1, -1, 2, -1]], np.int32)
    mask = labels >= 0
    got = float(losses.cross_entropy(tf.constant(logits), tf.constant(labels), tf.constant(mask)))
    lp = log_softmax(logits)
    expected = -np.mean([lp[i, j, labels[i, j]] for i, j in zip(*np.nonzero(mask))])
    assert got == pytest.approx(expected, rel=1e-5)


def test_class_weighted_cross_entropy_matches_reference():
    logits = rng.normal(size=(2, 5, 3)).astype(np.float32)
    labels = np.array([[0, 2, -1, 1, 0], [-1, 0, 2, 0, 1]], np.int32)
    mask = labels >= 0
    weights = (0.25, 1.0, 2.0)
    got = float(losses.cross_entropy(tf.constant(logits), tf.constant(labels), tf.constant(mask),
                                     weights))
    lp = log_softmax(logits)
    cells = list(zip(*np.nonzero(mask)))
    expected = -sum(weights[labels[i, j]] * lp[i, j, labels[i, j]] for i, j in cells) / len(cells)
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["mse", "kl"])
def test_all_padding_gives_zero_not_nan(name):
    s, t, _ = arrays()
    fn = losses.get(name, temperature=2.0)
    assert float(fn(tf.constant(s), tf.constant(t), tf.zeros((2, 5)))) == 0.0


def test_gradients_flow_to_student_only():
    s, t, mask = arrays()
    sv, tv = tf.Variable(s), tf.Variable(t)
    with tf.GradientTape() as tape:
        loss = losses.mse(sv, tv, tf.constant(mask))
    gs, gt = tape.gradient(loss, [sv, tv])
    assert gs is not None and gt is None
    assert np.all(gs.numpy()[mask == 0] == 0)


def test_registry_and_gather():
    assert set(losses.LOSSES) >= {"mse", "kl", "cross_entropy"}
    with pytest.raises(ValueError, match="unknown loss"):
        losses.get("hinge")
    x = tf.reshape(tf.range(2 * 4 * 1, dtype=tf.float32), (2, 4, 1))
    got = losses.gather_words(x, tf.constant([[1, 3], [0, 2]]))
    assert got.numpy()[..., 0].tolist() == [[1, 3], [4, 6]]
