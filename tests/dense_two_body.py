"""A two-body GP written out densely: the reference the sparse GP equals with every training
environment as a sparse point (importable from any test module)."""

from __future__ import annotations

import numpy as np

THETA, DELTA, CUTOFF, WIDTH = 0.15, 0.7, 3.2, 0.8
SIGMA_E = 0.05


def dense_kernel(X, Y):
    """The two-body covariance written out: delta^2 f_c f_c' exp(-(r - r')^2 / 2 theta^2)."""
    r, fc = X[:, 0], X[:, 1]
    s, gc = Y[:, 0], Y[:, 1]
    return (
        DELTA**2 * fc[:, None] * gc[None, :] * np.exp(-((r[:, None] - s[None]) ** 2) / 2 / THETA**2)
    )
