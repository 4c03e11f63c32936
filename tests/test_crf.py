"""CRF functions and layer against an independent brute force over all tag sequences.

The reference enumerates every K^n path over the unmasked positions of a row (K <= 3, n <= 5) in
float64 numpy, so it shares no code or recursion with the implementation under test.
"""

import itertools

import xtremedistil_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf

from xtremedistil_tf import crf, crf_layer

SEEDS = [0, 1, 2, 3]


# --------------------------------------------------------------------------- brute force


def _paths(row_mask, num_tags, allowed=None, allowed_start=None):
    """Yields (positions, path) for every path over the unmasked positions of one row."""
    positions = np.flatnonzero(row_mask)
    for path in itertools.product(range(num_tags), repeat=len(positions)):
        if allowed_start is not None and path and not allowed_start[path[0]]:
            continue
        if allowed is not None and any(not allowed[a, b] for a, b in zip(path, path[1:])):
            continue
        yield positions, path


def _path_score(e, positions, path, trans, start, end):
    if not path:
        return 0.0
    score = start[path[0]] + end[path[-1]]
    score += sum(e[p, y] for p, y in zip(positions, path))
    score += sum(trans[a, b] for a, b in zip(path, path[1:]))
    return score


def _logsumexp(x):
    x = np.asarray(x, np.float64)
    top = x.max()
    return top + np.log(np.exp(x - top).sum())


def brute_force(emissions, tags, mask, transitions, start=None, end=None, allowed=None,
                allowed_start=None):
    """Returns (log p(tags) [B], best path [B, T], best score [B], marginals [B, T, K])."""
    emissions = np.asarray(emissions, np.float64)
    b, t, k = emissions.shape
    start = np.zeros(k) if start is None else np.asarray(start, np.float64)
    end = np.zeros(k) if end is None else np.asarray(end, np.float64)
    trans = np.asarray(transitions, np.float64)
    mask = np.asarray(mask).astype(bool)
    log_p, best, best_score = np.zeros(b), np.zeros((b, t), np.int64), np.zeros(b)
    marginals = np.zeros((b, t, k))
    for i in range(b):
        paths = list(_paths(mask[i], k, allowed, allowed_start))
        scores = np.array([_path_score(emissions[i], pos, p, trans, start, end)
                           for pos, p in paths])
        log_z = _logsumexp(scores)
        positions = np.flatnonzero(mask[i])
        if tags is not None:
            gold = tuple(int(tags[i, p]) for p in positions)
            log_p[i] = _path_score(emissions[i], positions, gold, trans, start, end) - log_z
        top = int(np.argmax(scores))
        best[i, positions] = paths[top][1]
        best_score[i] = scores[top]
        probs = np.exp(scores - log_z)
        for (pos, path), prob in zip(paths, probs):
            marginals[i, pos, list(path)] += prob
    return log_p, best, best_score, marginals


def random_problem(seed, boundary=True, b=5, t=6, k=3, scale=1.0):
    """Random emissions / tags / parameters, ragged lengths and holes in the middle of rows."""
    rng = np.random.default_rng(seed)
    emissions = (rng.normal(size=(b, t, k)) * scale).astype(np.float32)
    tags = rng.integers(0, k, size=(b, t))
    mask = np.zeros((b, t), np.int32)
    for i in range(b):
        length = rng.integers(1, t + 1)
        mask[i, :length] = 1
        # Holes (non-first sub-words), but at most 5 counted positions: 3^5 paths per row.
        holes = rng.choice(length, size=max(length - 5, rng.integers(0, length)), replace=False)
        mask[i, holes] = 0
    mask[0] = [1, 0, 0, 1, 1, 0][:t]  # always one row with a hole between counted positions
    tags[mask == 0] = -100  # ignore-index labels at masked positions must be harmless
    params = {"transitions": rng.normal(size=(k, k)).astype(np.float32)}
    if boundary:
        params["start"] = rng.normal(size=k).astype(np.float32)
        params["end"] = rng.normal(size=k).astype(np.float32)
    return emissions, tags, mask, params


# --------------------------------------------------------------------------- against brute force


@pytest.mark.parametrize("boundary", [True, False])
@pytest.mark.parametrize("seed", SEEDS)
def test_functions_match_brute_force(seed, boundary):
    emissions, tags, mask, params = random_problem(seed, boundary)
    ref_ll, ref_path, ref_score, ref_marg = brute_force(emissions, tags, mask, **params)

    ll = crf.crf_log_likelihood(emissions, tags, mask, **params)
    path, score = crf.crf_decode(emissions, mask, **params)
    marg = crf.crf_marginals(emissions, mask, **params)

    np.testing.assert_allclose(ll.numpy(), ref_ll, atol=1e-4)
    assert path.dtype == tf.int32
    np.testing.assert_array_equal(path.numpy(), ref_path)
    np.testing.assert_allclose(score.numpy(), ref_score, atol=1e-4)
    np.testing.assert_allclose(marg.numpy(), ref_marg, atol=1e-4)


@pytest.mark.parametrize("mask_dtype", [np.bool_, np.int64, np.float32])
def test_mask_dtypes_and_masked_values_do_not_matter(mask_dtype):
    emissions, tags, mask, params = random_problem(7)
    base = crf.crf_log_likelihood(emissions, tags, mask, **params).numpy()
    noisy = emissions.copy()
    noisy[mask == 0] = 1e3  # padding / sub-word scores must not leak in
    noisy_tags = np.where(mask == 1, tags, 2)
    ll = crf.crf_log_likelihood(noisy, noisy_tags, mask.astype(mask_dtype), **params)
    np.testing.assert_allclose(ll.numpy(), base, atol=1e-5)
    np.testing.assert_array_equal(
        crf.crf_decode(noisy, mask.astype(mask_dtype), **params)[0].numpy(),
        crf.crf_decode(emissions, mask, **params)[0].numpy(),
    )


def test_all_masked_row():
    emissions, tags, mask, params = random_problem(3)
    mask[1] = 0
    ll = crf.crf_log_likelihood(emissions, tags, mask, **params).numpy()
    path, score = crf.crf_decode(emissions, mask, **params)
    marg = crf.crf_marginals(emissions, mask, **params).numpy()
    assert ll[1] == 0.0 and score.numpy()[1] == 0.0
    np.testing.assert_array_equal(path.numpy()[1], 0)
    np.testing.assert_array_equal(marg[1], 0.0)
    ref_ll, _, _, _ = brute_force(emissions, tags, mask, **params)
    np.testing.assert_allclose(ll, ref_ll, atol=1e-4)  # the other rows are unaffected
    # A batch of empty rows, and zero time steps, are valid too.
    zero = np.zeros((2, 0, 3), np.float32)
    ll0 = crf.crf_log_likelihood(zero, np.zeros((2, 0), int), np.zeros((2, 0)), **params)
    np.testing.assert_array_equal(ll0.numpy(), 0.0)
    assert crf.crf_decode(zero, np.zeros((2, 0)), **params)[0].shape == (2, 0)


def test_large_emissions_stay_finite_and_exact():
    emissions, tags, mask, params = random_problem(4, scale=1e4)
    emissions_t = tf.constant(emissions)
    with tf.GradientTape() as tape:
        tape.watch(emissions_t)
        ll = crf.crf_log_likelihood(emissions_t, tags, mask, **params)
    grad = tape.gradient(ll, emissions_t)
    marg = crf.crf_marginals(emissions, mask, **params)
    path, score = crf.crf_decode(emissions, mask, **params)
    for x in (ll, grad, marg, score):
        assert np.all(np.isfinite(x.numpy()))
    ref_ll, ref_path, ref_score, ref_marg = brute_force(emissions, tags, mask, **params)
    np.testing.assert_array_equal(path.numpy(), ref_path)
    # float32 carries ~7 significant digits of scores that are ~1e4 per step.
    np.testing.assert_allclose(ll.numpy(), ref_ll, rtol=1e-5, atol=0.05)
    np.testing.assert_allclose(score.numpy(), ref_score, rtol=1e-6)
    np.testing.assert_allclose(marg.numpy(), ref_marg, atol=1e-3)


# --------------------------------------------------------------------------- constraints


def test_iob2_allowed_hand_checked():
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    allowed, allowed_start = crf_layer.iob2_allowed(labels)
    # rows: from; columns: to            O     B-PER  I-PER  B-LOC  I-LOC
    expected = np.array([[True, True, False, True, False],  # O
                         [True, True, True, True, False],  # B-PER
                         [True, True, True, True, False],  # I-PER
                         [True, True, False, True, True],  # B-LOC
                         [True, True, False, True, True]])  # I-LOC
    np.testing.assert_array_equal(allowed, expected)
    np.testing.assert_array_equal(allowed_start, [True, True, False, True, False])
    assert allowed.dtype == bool and allowed_start.dtype == bool


@pytest.mark.parametrize("seed", SEEDS)
def test_constrained_decode_matches_brute_force_over_allowed_paths(seed):
    rng = np.random.default_rng(100 + seed)
    emissions, tags, mask, params = random_problem(seed)
    emissions *= 3.0  # make forbidden paths attractive so that the constraint has work to do
    allowed = rng.random((3, 3)) < 0.5
    allowed_start = rng.random(3) < 0.5
    allowed[0, 0] = allowed_start[0] = True  # all-zeros is always an allowed path
    path, score = crf.crf_decode(emissions, mask, **params, allowed=allowed,
                                 allowed_start=allowed_start)
    path = path.numpy()
    for i in range(len(path)):
        counted = path[i][mask[i] == 1]
        assert allowed_start[counted[0]]
        assert all(allowed[a, b] for a, b in zip(counted, counted[1:]))
    _, ref_path, ref_score, _ = brute_force(emissions, None, mask, **params, allowed=allowed,
                                            allowed_start=allowed_start)
    np.testing.assert_array_equal(path, ref_path)
    np.testing.assert_allclose(score.numpy(), ref_score, atol=1e-4)


def test_iob2_constraint_changes_an_unconstrained_decode():
    labels = ["O", "B-PER", "I-PER"]
    allowed, allowed_start = crf_layer.iob2_allowed(labels)
    # Emissions alone prefer "I-PER O I-PER": invalid IOB2 at both I-PER's.
    emissions = np.array([[[0.0, 1.0, 2.0], [2.0, 0.0, 0.0], [0.0, 1.0, 2.0]]], np.float32)
    trans = np.zeros((3, 3), np.float32)
    free, _ = crf.crf_decode(emissions, None, trans)
    np.testing.assert_array_equal(free.numpy(), [[2, 0, 2]])
    tied, _ = crf.crf_decode(emissions, None, trans, allowed=allowed, allowed_start=allowed_start)
    np.testing.assert_array_equal(tied.numpy(), [[1, 0, 1]])


# --------------------------------------------------------------------------- graph modes, dtypes


def test_xla_matches_eager():
    emissions, tags, mask, params = random_problem(5)
    allowed, allowed_start = crf_layer.iob2_allowed(["O", "B-X", "I-X"])

    def everything(e, y, m):
        with tf.GradientTape() as tape:
            tape.watch(e)
            ll = crf.crf_log_likelihood(e, y, m, **params)
        path, score = crf.crf_decode(e, m, **params, allowed=allowed, allowed_start=allowed_start)
        return ll, tape.gradient(ll, e), path, score, crf.crf_marginals(e, m, **params)

    args = (tf.constant(emissions), tf.constant(tags), tf.constant(mask))
    eager = everything(*args)
    compiled = tf.function(everything, jit_compile=True)(*args)
    for a, b in zip(eager, compiled):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_dynamic_shapes_trace_once():
    k = 3
    _, _, _, params = random_problem(0)

    @tf.function(input_signature=[tf.TensorSpec([None, None, k], tf.float32),
                                  tf.TensorSpec([None, None], tf.int32),
                                  tf.TensorSpec([None, None], tf.int32)])
    def run(e, y, m):
        return (crf.crf_log_likelihood(e, y, m, **params), *crf.crf_decode(e, m, **params),
                crf.crf_marginals(e, m, **params))

    for seed, (b, t) in enumerate([(5, 6), (2, 4), (3, 5)]):
        emissions, tags, mask, _ = random_problem(seed, b=b, t=t)
        tags = np.maximum(tags, 0).astype(np.int32)
        ll, path, score, marg = run(emissions, tags, mask)
        ref_ll, ref_path, ref_score, ref_marg = brute_force(emissions, tags, mask, **params)
        np.testing.assert_allclose(ll.numpy(), ref_ll, atol=1e-4)
        np.testing.assert_array_equal(path.numpy(), ref_path)
        np.testing.assert_allclose(marg.numpy(), ref_marg, atol=1e-4)
    assert run.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("half", [tf.bfloat16, tf.float16])
def test_half_precision_emissions_compute_in_float32(half):
    emissions, tags, mask, params = random_problem(6)
    low = tf.cast(emissions, half)
    ll = crf.crf_log_likelihood(low, tags, mask, **params)
    path, score = crf.crf_decode(low, mask, **params)
    marg = crf.crf_marginals(low, mask, **params)
    assert ll.dtype == score.dtype == marg.dtype == tf.float32
    # Exactly the float32 result on the rounded emissions, and close to the unrounded one.
    rounded = tf.cast(low, tf.float32)
    np.testing.assert_allclose(ll.numpy(), crf.crf_log_likelihood(rounded, tags, mask, **params),
                               atol=1e-5)
    np.testing.assert_allclose(ll.numpy(), crf.crf_log_likelihood(emissions, tags, mask, **params),
                               atol=0.1)
    np.testing.assert_allclose(marg.numpy(), crf.crf_marginals(emissions, mask, **params),
                               atol=0.02)


def test_gradients_match_finite_differences_float64():
    emissions, tags, mask, params = random_problem(8, b=2, t=4)
    emissions = emissions.astype(np.float64)
    params = {name: value.astype(np.float64) for name, value in params.items()}
    variables = {"emissions": tf.constant(emissions),
                 **{name: tf.constant(value) for name, value in params.items()}}
    with tf.GradientTape() as tape:
        tape.watch(list(variables.values()))
        total = tf.reduce_sum(crf.crf_log_likelihood(variables["emissions"], tags, mask,
                                                     **{n: variables[n] for n in params}))
    assert total.dtype == tf.float64
    grads = tape.gradient(total, variables)

    def reference(values):
        return brute_force(values["emissions"], tags, mask,
                           **{n: values[n] for n in params})[0].sum()

    base = {"emissions": emissions, **params}
    eps = 1e-6
    for name, value in base.items():
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            up, down = value.copy(), value.copy()
            up[index] += eps
            down[index] -= eps
            numeric[index] = (reference({**base, name: up})
                              - reference({**base, name: down})) / (2 * eps)
        np.testing.assert_allclose(grads[name].numpy(), numeric, atol=1e-6, err_msg=name)
    # d log p / d emissions = one-hot(gold) - marginals at counted positions, 0 elsewhere.
    one_hot = np.eye(3)[np.maximum(tags, 0)] * mask[..., None]
    marg = brute_force(emissions, tags, mask, **params)[3]
    np.testing.assert_allclose(grads["emissions"].numpy(), one_hot - marg, atol=1e-8)


# --------------------------------------------------------------------------- Keras layer


@pytest.fixture
def mixed_bfloat16():
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    yield
    tf.keras.mixed_precision.set_global_policy("float32")


def _randomised_layer(seed=0, **kwargs):
    layer = crf_layer.CRF(3, **kwargs)
    layer.build(tf.TensorShape([None, None, 3]))
    rng = np.random.default_rng(seed)
    for variable in layer.trainable_variables:
        variable.assign(rng.normal(size=variable.shape))
    return layer


def test_layer_variables_identity_and_methods():
    layer = crf_layer.CRF(3, name="crf")
    emissions, tags, mask, _ = random_problem(9)
    out = layer(tf.constant(emissions), mask=tf.constant(mask, tf.bool))
    np.testing.assert_array_equal(out.numpy(), emissions)
    names = sorted(v.name for v in layer.trainable_variables)
    assert names == ["crf/end:0", "crf/start:0", "crf/transitions:0"]
    assert all(not np.any(v.numpy()) for v in layer.trainable_variables)  # zeros-initialised
    bare = crf_layer.CRF(3, use_boundary=False)
    bare.log_likelihood(emissions, tags, mask)  # builds on first use
    assert [v.name.split("/")[-1] for v in bare.trainable_variables] == ["transitions:0"]

    layer = _randomised_layer()
    params = {"transitions": layer.transitions.numpy(), "start": layer.start.numpy(),
              "end": layer.end.numpy()}
    ref_ll, ref_path, _, ref_marg = brute_force(emissions, tags, mask, **params)
    np.testing.assert_allclose(layer.log_likelihood(emissions, tags, mask).numpy(), ref_ll,
                               atol=1e-4)
    np.testing.assert_array_equal(layer.decode(emissions, mask)[0].numpy(), ref_path)
    np.testing.assert_allclose(layer.marginals(emissions, mask).numpy(), ref_marg, atol=1e-4)
    with pytest.raises(ValueError, match="num_tags"):
        crf_layer.CRF(4).build(tf.TensorShape([None, None, 3]))


def test_layer_decode_applies_allowed_transitions():
    allowed, allowed_start = crf_layer.iob2_allowed(["O", "B-PER", "I-PER"])
    layer = _randomised_layer(1, allowed_transitions=allowed, allowed_start=allowed_start)
    emissions, _, mask, _ = random_problem(10)
    emissions *= 3.0
    params = {"transitions": layer.transitions.numpy(), "start": layer.start.numpy(),
              "end": layer.end.numpy()}
    _, ref_path, ref_score, _ = brute_force(emissions, None, mask, **params, allowed=allowed,
                                            allowed_start=allowed_start)
    path, score = layer.decode(emissions, mask)
    np.testing.assert_array_equal(path.numpy(), ref_path)
    np.testing.assert_allclose(score.numpy(), ref_score, atol=1e-4)


def test_layer_config_round_trip():
    allowed, allowed_start = crf_layer.iob2_allowed(["O", "B-PER", "I-PER"])
    layer = crf_layer.CRF(3, use_boundary=False, allowed_transitions=allowed,
                    allowed_start=allowed_start, name="tagger")
    config = layer.get_config()
    assert config["allowed_transitions"] == allowed.tolist()
    assert all(type(x) is bool for row in config["allowed_transitions"] for x in row)
    clone = crf_layer.CRF.from_config(config)
    assert clone.get_config() == config
    with pytest.raises(ValueError, match="allowed_transitions"):
        crf_layer.CRF(4, allowed_transitions=allowed)


def test_layer_save_and_load_weights(tmp_path):
    emissions, tags, mask, _ = random_problem(11)

    def model(layer):
        inputs = tf.keras.Input([None, 3])
        return tf.keras.Model(inputs, layer(inputs))

    saved_layer = _randomised_layer(2)
    saved = model(saved_layer)
    path = str(tmp_path / "crf.weights.h5")
    saved.save_weights(path)
    loaded_layer = crf_layer.CRF(3)
    loaded = model(loaded_layer)
    loaded.load_weights(path)
    np.testing.assert_array_equal(
        loaded_layer.log_likelihood(emissions, tags, mask).numpy(),
        saved_layer.log_likelihood(emissions, tags, mask).numpy(),
    )
    assert np.any(loaded_layer.transitions.numpy())  # not still the zeros it started with


def test_layer_under_mixed_precision(mixed_bfloat16):
    layer = crf_layer.CRF(3)
    emissions, tags, mask, _ = random_problem(12)
    out = layer(tf.constant(emissions))
    assert out.dtype == tf.float32  # passed through, not rounded to bfloat16
    np.testing.assert_array_equal(out.numpy(), emissions)
    assert all(v.dtype == tf.float32 for v in layer.variables)

    @tf.function(jit_compile=True)
    def step(e):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(layer.log_likelihood(tf.cast(e, tf.bfloat16), tags, mask))
        return loss, tape.gradient(loss, layer.trainable_variables)

    loss, grads = step(tf.constant(emissions))
    assert loss.dtype == tf.float32
    assert all(g.dtype == tf.float32 and np.all(np.isfinite(g.numpy())) for g in grads)
