"""The sparse points of one (term, kind) and the Cholesky factor of their K_MM block."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.linalg

logger = logging.getLogger("gapx")


@dataclass
class SparseSet:
    """Sparse points of one (term, kind): columns ``offset : offset + size`` of K_NM."""

    term: int
    kind: int
    points: np.ndarray
    offset: int
    delta: float
    jitter: float = 0.0
    factor: np.ndarray | None = None

    @property
    def size(self) -> int:
        return self.points.shape[0]

    @property
    def columns(self) -> slice:
        return slice(self.offset, self.offset + self.size)


def kmm_cholesky(kernel, points: np.ndarray, delta: float, jitter: float):
    """Lower Cholesky factor L of ``delta^2 K(points, points) + j I`` and the jitter ``j`` used.

    ``jitter`` is relative to the block's prior variance: ``j = jitter * delta^2``, the prior
    variance of a local energy (every kernel of gapx has ``k(x, x) <= 1``: SOAP rows are unit
    vectors, the two-body cutoff weight is at most 1). So the regularisation, and with it the
    conditioning of K_MM, is the same whatever a term's energy scale delta (an absolute jitter
    is relatively 100 times weaker at delta = 10 than at delta = 1, and 100 times stronger at
    0.1); at delta = 1 the two are the same number.

    When the factorisation fails (numerically singular K_MM, e.g. duplicated sparse points), the
    jitter is raised tenfold, starting from 1e-12 of the largest diagonal element, until it
    succeeds; a warning says so. The same factor is used for the solve and for the variance.
    """
    K = delta**2 * kernel(points, points)
    scale = float(np.max(np.diag(K))) if K.size else 1.0
    jitter = float(jitter) * delta**2
    trial = jitter
    while True:
        try:
            L = scipy.linalg.cholesky(
                K + trial * np.eye(K.shape[0]), lower=True, check_finite=False
            )
            if trial != jitter:
                logger.warning("K_MM not positive definite: sparse_jitter raised to %.3g", trial)
            return L, trial
        except np.linalg.LinAlgError:
            if trial >= 1e-2 * scale:
                raise ValueError(
                    "K_MM is not positive definite even with jitter "
                    f"{trial:.3g}: sparse points are degenerate"
                ) from None
            trial = max(trial * 10.0, 1e-12 * scale)
