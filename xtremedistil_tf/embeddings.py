"""Compressing a teacher's word embeddings to a student's width by truncated SVD."""

from __future__ import annotations

import numpy as np


def compress(embeddings: np.ndarray, dim: int) -> np.ndarray:
    """Projects `[V, H]` embeddings onto their top `dim` right singular vectors.

    Returns `E V_d` (`[V, dim]`), i.e. `U_d S_d` of the truncated SVD `E ≈ U_d S_d V_dᵀ`: the
    rank-`dim` approximation that keeps the most of E's energy. Computed from the `[H, H]` Gram
    matrix, so a 250k-row vocabulary costs one small eigendecomposition, not an SVD of E.
    Columns are ordered by decreasing singular value. When `dim >= H` the embeddings are
    returned unchanged (padded with zero columns if `dim > H`).

    Args:
        embeddings: `[V, H]` word-embedding matrix.
        dim: target width.
    """
    emb = np.asarray(embeddings, np.float64)
    v, h = emb.shape
    if dim >= h:
        out = np.zeros((v, dim), np.float32)
        out[:, :h] = emb
        return out
    gram = emb.T @ emb
    eigvals, eigvecs = np.linalg.eigh(gram)  # ascending
    top = eigvecs[:, np.argsort(eigvals)[::-1][:dim]]
    # Fix each vector's sign (largest entry positive) so the result is deterministic.
    signs = np.sign(top[np.argmax(np.abs(top), axis=0), np.arange(dim)])
    return (emb @ (top * signs)).astype(np.float32)
