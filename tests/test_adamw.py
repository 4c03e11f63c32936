"""The fused AdamW (`xtremedistil_tf.adamw`): the same steps as Keras' AdamW and as a float64
reference written from the algorithm (decoupled weight decay, then Adam with bias correction),
for sparse gradients with repeated rows, dense gradients, and variables excluded from decay."""

import numpy as np
import pytest
import tensorflow as tf

from xtremedistil_tf import adamw, train

keras = tf.keras
LR, WD, B1, B2, EPS = 1e-2, 0.1, 0.9, 0.999, 1e-7


def reference(w, grads, decayed: bool):
    """float64 AdamW: w -= lr*wd*w; m, v moments; w -= lr_t * m / (sqrt(v) + eps)."""
    w, m, v = w.astype(np.float64), np.zeros(w.shape), np.zeros(w.shape)
    for t, g in enumerate(grads, start=1):
        if decayed:
            w = w - LR * WD * w
        m = B1 * m + (1 - B1) * g
        v = B2 * v + (1 - B2) * g * g
        w = w - LR * np.sqrt(1 - B2 ** t) / (1 - B1 ** t) * m / (np.sqrt(v) + EPS)
    return w


def sparse_steps(rng, rows, width, steps):
    """Per step: (indices with repeats, values) and the dense gradient they sum to."""
    out = []
    for _ in range(steps):
        idx = rng.integers(0, rows, 12)
        idx[1] = idx[0]  # a sub-word twice in one batch
        vals = rng.standard_normal((12, width)).astype(np.float32)
        dense = np.zeros((rows, width))
        np.add.at(dense, idx, vals.astype(np.float64))
        out.append((idx.astype(np.int32), vals, dense))
    return out


def run(opt_class, init, steps, name, sparse: bool):
    var = tf.Variable(init, name=name)
    opt = opt_class(learning_rate=LR, weight_decay=WD, beta_1=B1, beta_2=B2, epsilon=EPS)
    opt.exclude_from_weight_decay(var_names=["LayerNorm"])
    for idx, vals, dense in steps:
        grad = (tf.IndexedSlices(tf.constant(vals), tf.constant(idx), tf.constant(init.shape))
                if sparse else tf.constant(dense.astype(np.float32)))
        opt.apply_gradients([(grad, var)])
    return var.numpy()


@pytest.fixture
def fuse_everything(monkeypatch):
    monkeypatch.setattr(adamw, "FUSED_MIN_SIZE", 1)


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("name", ["embeddings", "LayerNorm"])
def test_fused_steps_match_keras_and_the_reference(fuse_everything, sparse, name):
    rng = np.random.default_rng(0)
    init = rng.standard_normal((40, 8)).astype(np.float32)
    steps = sparse_steps(rng, 40, 8, 6)
    fused = run(adamw.AdamW, init, steps, name, sparse)
    keras_w = run(keras.optimizers.AdamW, init, steps, name, sparse)
    expected = reference(init, [d for _, _, d in steps], decayed=name != "LayerNorm")
    np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(keras_w, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(fused, init)  # it did move


def test_small_variables_take_keras_path_and_large_ones_the_fused_one(monkeypatch):
    calls = []
    monkeypatch.setattr(adamw, "_fused_update", lambda *a: calls.append(a[0].name))
    opt = adamw.AdamW(learning_rate=LR, weight_decay=WD)
    small, large = tf.Variable(tf.ones([4, 4]), name="small"), tf.Variable(
        tf.ones([adamw.FUSED_MIN_SIZE // 64, 64]), name="large")
    opt.apply_gradients([(tf.ones([4, 4]), small), (tf.ones(large.shape), large)])
    assert calls == ["large:0"]
    assert not np.allclose(small.numpy(), 1.0)  # Keras' own update ran on the small one


def test_make_optimizer_uses_it_and_its_checkpoints_are_keras_ones(tmp_path, fuse_everything):
    var = tf.Variable(tf.ones([6, 4]), name="embeddings")
    opt, _ = train.make_optimizer([var], 1e-2, 10, 0.0, 0.01)
    assert isinstance(opt, adamw.AdamW)
    opt.apply_gradients([(tf.fill([6, 4], 0.5), var)])
    path = tf.train.Checkpoint(opt=opt, var=var).write(str(tmp_path / "ckpt"))
    other_var = tf.Variable(tf.zeros([6, 4]), name="embeddings")
    other = keras.optimizers.AdamW(learning_rate=train.WarmupLinearDecay(1e-2, 10, 0),
                                   weight_decay=0.01)
    other.build([other_var])
    tf.train.Checkpoint(opt=other, var=other_var).read(path).assert_consumed()
    np.testing.assert_array_equal(other.variables[1].numpy(), opt.variables[1].numpy())
