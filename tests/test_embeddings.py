"""Truncated-SVD compression of word embeddings against numpy's SVD."""

import numpy as np
import pytest

from xtremedistil_tf import embeddings


def test_matches_numpy_svd_up_to_sign():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(300, 24)) @ np.diag(np.linspace(3, 0.1, 24))
    got = embeddings.compress(e, 8)
    u, s, _ = np.linalg.svd(e, full_matrices=False)
    ref = u[:, :8] * s[:8]
    assert got.shape == (300, 8) and got.dtype == np.float32
    for k in range(8):
        sign = np.sign(got[:, k] @ ref[:, k])
        np.testing.assert_allclose(got[:, k], sign * ref[:, k], rtol=1e-3, atol=1e-3)


def test_keeps_the_best_rank_k_energy():
    rng = np.random.default_rng(1)
    e = rng.normal(size=(200, 16))
    got = embeddings.compress(e, 4)
    s = np.linalg.svd(e, compute_uv=False)
    # Pythagoras: the projection keeps exactly the top singular values' energy.
    assert (got.astype(np.float64) ** 2).sum() == pytest.approx((s[:4] ** 2).sum(), rel=1e-4)


def test_wider_target_keeps_values():
    e = np.arange(12, dtype=np.float32).reshape(4, 3)
    got = embeddings.compress(e, 5)
    np.testing.assert_array_equal(got[:, :3], e)
    assert (got[:, 3:] == 0).all()
