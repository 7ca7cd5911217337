"""Covariance kernels between descriptor rows, with derivatives with respect to the first argument.

Every kernel works on whole blocks of rows with NumPy/BLAS (one GEMM per call; the squared
exponential, which has few features, one vectorised pass per feature), never on single pairs.
The energy scale ``delta**2`` is not part of the kernel: the GP multiplies it in.

Three derivative forms are provided, because the sparse GP needs them in different places:

* ``dk_dx(X, Y)`` -> (n, m, F), the full derivative (tests, small feature counts);
* ``directional(X, Y, D, rows)`` -> (n_d, m): ``sum_f dk(x_{rows[d]}, y_m)/dx_f * D[d, f]``, used
  to build force and virial rows from descriptor gradients ``D`` without forming ``dk_dx``;
* ``gradient(X, Y, C)`` -> (n, F): ``sum_m C[i, m] dk(x_i, y_m)/dx_i``, dE/dX at prediction;
  ``value_and_gradient`` returns the values too, sharing the GEMM where it can.

For the prior covariances of forces and stresses (predictive variances) two batched forms work on
stacks of small blocks, ``Xa`` (B, n, F) and ``Xb`` (B, n', F):

* ``batched(Xa, Xb)`` -> (B, n, n'): ``k(xa_p, xb_q)`` per block;
* ``mixed_batched(Xa, Xb, U, V)`` -> (B, n, n'): ``u_p^T [d^2 k(x, y) / dx dy] v_q`` at
  ``(xa_p, xb_q)``, the covariance of two directional derivatives of the GP.
"""

from __future__ import annotations

import numpy as np

from .validation import described_settings, positive_number


def _as_rows(X, name: str) -> np.ndarray:
    array = np.ascontiguousarray(X, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array of rows, got shape {array.shape}")
    return array


def _coefficients(C, n: int, m: int) -> np.ndarray:
    C = np.asarray(C, dtype=np.float64)
    if C.ndim == 1:
        C = np.broadcast_to(C[None, :], (n, m))
    if C.shape != (n, m):
        raise ValueError(f"coefficients must have shape ({m},) or ({n}, {m}), got {C.shape}")
    return C


class DotProduct:
    """Dot-product kernel ``k(x, y) = (x_hat . y_hat)^zeta``.

    Parameters
    ----------
    zeta : float
        Positive exponent (QUIP's ``zeta``); integer values are exact for negative dot products.
    normalise : bool
        Normalise both arguments (the derivative then includes the normalisation). ``False``
        assumes rows are already unit vectors (SOAP rows are) and uses ``(x . y)^zeta``.
    """

    type_name = "dot_product"

    def __init__(self, zeta: float = 4.0, normalise: bool = True):
        self.zeta = positive_number("zeta", zeta)
        self.normalise = bool(normalise)

    def _unit(self, X):
        if not self.normalise:
            return X, np.ones(X.shape[0])
        norms = np.linalg.norm(X, axis=1)
        if np.any(norms == 0.0):
            raise ValueError("the normalised dot-product kernel is undefined for an all-zero row")
        return X / norms[:, None], norms

    def _power(self, c, p):
        # Small integer powers by multiplication: exact for negative c, and much faster.
        if p == 0.0:
            return np.ones_like(c)
        if p == float(int(p)) and 1 <= p <= 8:
            out = c.copy()
            for _ in range(int(p) - 1):
                out *= c
            return out
        return np.power(c, p)

    def __call__(self, X, Y) -> np.ndarray:
        Xh, _ = self._unit(_as_rows(X, "X"))
        Yh, _ = self._unit(_as_rows(Y, "Y"))
        return self._power(Xh @ Yh.T, self.zeta)

    def diag(self, X) -> np.ndarray:
        X = _as_rows(X, "X")
        if self.normalise:
            self._unit(X)
            return np.ones(X.shape[0])
        return self._power(np.einsum("if,if->i", X, X), self.zeta)

    def dk_dx(self, X, Y) -> np.ndarray:
        Xh, nx = self._unit(_as_rows(X, "X"))
        Yh, _ = self._unit(_as_rows(Y, "Y"))
        c = Xh @ Yh.T
        w = self.zeta * self._power(c, self.zeta - 1.0)
        d = Yh[None, :, :]
        if self.normalise:
            d = (d - c[:, :, None] * Xh[:, None, :]) / nx[:, None, None]
        return w[:, :, None] * d

    def directional(self, X, Y, D, rows) -> np.ndarray:
        Xh, nx = self._unit(_as_rows(X, "X"))
        Yh, _ = self._unit(_as_rows(Y, "Y"))
        rows = np.asarray(rows, dtype=np.int64)
        D = _as_rows(D, "D")
        # Dot products once per row, not once per derivative entry (rows repeat).
        c = Xh @ Yh.T
        out = D @ Yh.T
        if self.normalise:
            along = np.einsum("df,df->d", D, Xh[rows])
            out -= c[rows] * along[:, None]
            out /= nx[rows][:, None]
        out *= (self.zeta * self._power(c, self.zeta - 1.0))[rows]
        return out

    def gradient(self, X, Y, C) -> np.ndarray:
        Xh, nx = self._unit(_as_rows(X, "X"))
        Yh, _ = self._unit(_as_rows(Y, "Y"))
        c = Xh @ Yh.T
        W = _coefficients(C, *c.shape) * (self.zeta * self._power(c, self.zeta - 1.0))
        out = W @ Yh
        if self.normalise:
            out -= np.sum(W * c, axis=1)[:, None] * Xh
            out /= nx[:, None]
        return out

    def value_and_gradient(self, X, Y, C) -> tuple[np.ndarray, np.ndarray]:
        """``(k(X, Y), gradient(X, Y, C))`` sharing one GEMM of dot products (prediction)."""
        Xh, nx = self._unit(_as_rows(X, "X"))
        Yh, _ = self._unit(_as_rows(Y, "Y"))
        c = Xh @ Yh.T
        lower = self._power(c, self.zeta - 1.0)
        W = _coefficients(C, *c.shape) * (self.zeta * lower)
        lower *= c
        out = W @ Yh
        if self.normalise:
            out -= np.sum(W * c, axis=1)[:, None] * Xh
            out /= nx[:, None]
        return lower, out

    def _unnormalised_only(self, what: str) -> None:
        if self.normalise:
            raise NotImplementedError(
                f"{what} of the normalising dot-product kernel is not implemented; terms use "
                "rows normalised by the descriptor (normalise=False)"
            )

    def batched(self, Xa, Xb) -> np.ndarray:
        self._unnormalised_only("batched")
        return self._power(np.matmul(Xa, np.swapaxes(Xb, -1, -2)), self.zeta)

    def mixed_batched(self, Xa, Xb, U, V) -> np.ndarray:
        return self.mixed_terms(Xa, Xb, U, V)[3]

    def mixed_terms(self, Xa, Xb, U, V):
        """``(k, dk/dx . u, dk/dy . v, u^T [d^2 k / dx dy] v)`` per block pair:
        d^2 (x.y)^z / dx dy = z c^(z-1) I + z (z-1) c^(z-2) y x^T, c = x.y."""
        self._unnormalised_only("mixed_terms")
        c = np.matmul(Xa, np.swapaxes(Xb, -1, -2))
        uv = np.matmul(U, np.swapaxes(V, -1, -2))
        uy = np.matmul(U, np.swapaxes(Xb, -1, -2))
        xv = np.matmul(Xa, np.swapaxes(V, -1, -2))
        if self.zeta == 1.0:
            return c, uy, xv, uv
        lower = self._power(c, self.zeta - 2.0)
        first = self.zeta * lower * c
        mixed = first * uv + self.zeta * (self.zeta - 1.0) * lower * uy * xv
        return first * c / self.zeta, first * uy, first * xv, mixed

    def mixed_diag(self, X, U) -> np.ndarray:
        """(n,): ``u_i^T [d^2 k / dx dy] u_i`` at ``(x_i, x_i)``."""
        self._unnormalised_only("mixed_diag")
        c = np.einsum("if,if->i", X, X)
        uu = np.einsum("if,if->i", U, U)
        ux = np.einsum("if,if->i", U, X)
        if self.zeta == 1.0:
            return uu
        lower = self._power(c, self.zeta - 2.0)
        return self.zeta * (lower * c * uu + (self.zeta - 1.0) * lower * ux * ux)

    def to_dict(self) -> dict:
        return {"type": self.type_name, "zeta": self.zeta, "normalise": self.normalise}

    @classmethod
    def from_dict(cls, data: dict) -> DotProduct:
        return cls(**described_settings(data, (cls.type_name,), "DotProduct"))


# Kernel values per block of rows in value_and_gradient: a few such arrays fit in L2 cache.
VALUE_BLOCK_ELEMENTS = 1 << 14


def _differences(X, Y):
    """Per feature f, ``X[..., :, None, f] - Y[..., None, :, f]``: (..., n, m) each."""
    for f in range(X.shape[-1]):
        yield f, X[..., :, None, f] - Y[..., None, :, f]


class SquaredExponential:
    """Squared-exponential kernel ``k(x, y) = exp(-sum_f (x_f - y_f)^2 / (2 theta_f^2))``.

    ``theta`` is one length scale for every feature, or one per feature (QUIP's ``ard_se``, as
    the three-body term uses): the kernel then works on the scaled rows ``x / theta``, where it
    is the unit-length-scale kernel, and each derivative with respect to ``x`` is ``1 / theta``
    times the one with respect to ``x / theta``.

    Everything is computed from the differences ``x - y`` themselves, one feature at a time
    (this kernel has few features: the two-body distance has one), never from the expanded
    ``|x|^2 + |y|^2 - 2 x . y``. For distances of a few Å that form loses the digits ``r^2``
    holds beyond ``(r - r')^2`` (its error is that of ``r^2``, 1e-15 Å^2, where the
    difference's own is 1e-17), and a two-body local energy sums kernel values with weights of
    1e4 that cancel: the expanded form made its round-off ten times larger (rotation
    invariance about 2e-10 eV instead of 2e-11, finite differences limited by it).
    """

    type_name = "squared_exponential"

    def __init__(self, theta: float | tuple[float, ...] = 1.0):
        if np.ndim(theta) == 0:
            self.theta = positive_number("theta (length scale)", theta)
        else:
            self.theta = tuple(
                positive_number(f"theta[{f}] (length scale)", t) for f, t in enumerate(theta)
            )
            if not self.theta:
                raise ValueError("theta must be a number or a non-empty list of length scales")
        self._inverse = 1.0 / np.asarray(self.theta, dtype=np.float64)

    def _scaled(self, *arrays):
        """Each array (..., F) divided by the length scales, checking F against them."""
        if self._inverse.ndim and any(a.shape[-1] != self._inverse.size for a in arrays):
            raise ValueError(
                f"this kernel has {self._inverse.size} length scales, rows have "
                f"{arrays[0].shape[-1]} features"
            )
        return [a * self._inverse for a in arrays]

    def __call__(self, X, Y) -> np.ndarray:
        return self._unit_batched(*self._scaled(_as_rows(X, "X"), _as_rows(Y, "Y")))

    @staticmethod
    def _squared_distances(X, Y) -> np.ndarray:
        """(..., n, m): ``|x - y|^2`` for rows ``X`` (..., n, F) and ``Y`` (..., m, F)."""
        sq = np.zeros(np.broadcast_shapes(X.shape[:-2], Y.shape[:-2]) + (X.shape[-2], Y.shape[-2]))
        for _, d in _differences(X, Y):
            sq += d * d
        return sq

    def diag(self, X) -> np.ndarray:
        return np.ones(_as_rows(X, "X").shape[0])

    def dk_dx(self, X, Y) -> np.ndarray:
        x, y = self._scaled(_as_rows(X, "X"), _as_rows(Y, "Y"))
        k = self._unit_batched(x, y)
        return -k[:, :, None] * (x[:, None, :] - y[None, :, :]) * self._inverse

    def directional(self, X, Y, D, rows) -> np.ndarray:
        x, y, D = self._scaled(_as_rows(X, "X"), _as_rows(Y, "Y"), _as_rows(D, "D"))
        rows = np.asarray(rows, dtype=np.int64)
        k = self._unit_batched(x, y)[rows]
        along = np.zeros_like(k)  # D . (x - y), both scaled
        for f, d in _differences(x[rows], y):
            along += D[:, f, None] * d
        return -k * along

    def gradient(self, X, Y, C) -> np.ndarray:
        x, y = self._scaled(_as_rows(X, "X"), _as_rows(Y, "Y"))
        k = self._unit_batched(x, y)
        W = _coefficients(C, *k.shape) * k
        out = np.empty_like(x)
        for f, d in _differences(x, y):
            out[:, f] = np.sum(W * d, axis=1)
        return -out * self._inverse

    def value_and_gradient(self, X, Y, C) -> tuple[np.ndarray, np.ndarray]:
        """``(k(X, Y), gradient(X, Y, C))`` from one evaluation of k, in blocks of rows whose
        differences stay in cache (a prediction has 1e5 three-body rows or more)."""
        x, y = self._scaled(_as_rows(X, "X"), _as_rows(Y, "Y"))
        n, m = x.shape[0], y.shape[0]
        C = _coefficients(C, n, m)
        k = np.empty((n, m))
        out = np.empty_like(x)
        step = max(1, VALUE_BLOCK_ELEMENTS // max(m, 1))
        for start in range(0, n, step):
            rows = slice(start, min(start + step, n))
            differences = list(_differences(x[rows], y))
            sq = np.zeros((rows.stop - rows.start, m))
            for _, d in differences:
                sq += d * d
            block = np.exp(-0.5 * sq)
            k[rows] = block
            block *= C[rows]
            for f, d in differences:
                out[rows, f] = -np.sum(block * d, axis=1)
        return k, out * self._inverse

    def _unit_batched(self, x, y) -> np.ndarray:
        """The kernel of rows already divided by the length scales."""
        return np.exp(-0.5 * self._squared_distances(x, y))

    def batched(self, Xa, Xb) -> np.ndarray:
        return self._unit_batched(*self._scaled(Xa, Xb))

    def mixed_batched(self, Xa, Xb, U, V) -> np.ndarray:
        return self.mixed_terms(Xa, Xb, U, V)[3]

    def mixed_terms(self, Xa, Xb, U, V):
        """``(k, dk/dx . u, dk/dy . v, u^T [d^2 k / dx dy] v)`` per block pair, from one
        evaluation of k: in scaled rows and directions, d^2 k / dx dy = k [I - (x - y)(x - y)^T]."""
        Xa, Xb, U, V = self._scaled(Xa, Xb, U, V)
        k = self._unit_batched(Xa, Xb)
        uv = np.matmul(U, np.swapaxes(V, -1, -2))
        u_d = np.zeros_like(k)  # u . (x - y) and (x - y) . v
        d_v = np.zeros_like(k)
        for f, d in _differences(Xa, Xb):
            u_d += U[..., :, None, f] * d
            d_v += d * V[..., None, :, f]
        return k, -k * u_d, k * d_v, k * (uv - u_d * d_v)

    def mixed_diag(self, X, U) -> np.ndarray:
        """(n,): ``u_i^T [d^2 k / dx dy] u_i`` at ``(x_i, x_i)``: ``sum_f u_f^2 / theta_f^2``."""
        (U,) = self._scaled(U)
        return np.einsum("if,if->i", U, U)

    def to_dict(self) -> dict:
        theta = self.theta if isinstance(self.theta, float) else list(self.theta)
        return {"type": self.type_name, "theta": theta}

    @classmethod
    def from_dict(cls, data: dict) -> SquaredExponential:
        return cls(**described_settings(data, (cls.type_name,), "SquaredExponential"))


class CutoffWeighted:
    """``k((x, w), (y, v)) = w v k_inner(x, y)``: the last feature column is a weight.

    The two-body term stores the smooth cutoff ``f_c(r)`` as that weight so that the kernel (and
    every local energy) goes smoothly to zero at the cutoff, as QUIP's ``distance_2b``.
    """

    type_name = "cutoff_weighted"

    def __init__(self, inner):
        self.inner = inner

    @staticmethod
    def _split(X):
        return X[:, :-1], X[:, -1]

    def __call__(self, X, Y) -> np.ndarray:
        (x, w), (y, v) = self._split(_as_rows(X, "X")), self._split(_as_rows(Y, "Y"))
        return w[:, None] * v[None, :] * self.inner(x, y)

    def diag(self, X) -> np.ndarray:
        x, w = self._split(_as_rows(X, "X"))
        return w * w * self.inner.diag(x)

    def dk_dx(self, X, Y) -> np.ndarray:
        (x, w), (y, v) = self._split(_as_rows(X, "X")), self._split(_as_rows(Y, "Y"))
        wv = w[:, None] * v[None, :]
        d_inner = wv[:, :, None] * self.inner.dk_dx(x, y)
        d_weight = (v[None, :] * self.inner(x, y))[:, :, None]
        return np.concatenate([d_inner, d_weight], axis=2)

    def directional(self, X, Y, D, rows) -> np.ndarray:
        (x, w), (y, v) = self._split(_as_rows(X, "X")), self._split(_as_rows(Y, "Y"))
        D = _as_rows(D, "D")
        rows = np.asarray(rows, dtype=np.int64)
        d_inner = self.inner.directional(x, y, D[:, :-1], rows)
        k_inner = self.inner(x, y)[rows]
        return v[None, :] * (w[rows][:, None] * d_inner + D[:, -1][:, None] * k_inner)

    def gradient(self, X, Y, C) -> np.ndarray:
        (x, w), (y, v) = self._split(_as_rows(X, "X")), self._split(_as_rows(Y, "Y"))
        C = _coefficients(C, x.shape[0], y.shape[0])
        g_inner = self.inner.gradient(x, y, C * w[:, None] * v[None, :])
        g_weight = np.sum(C * v[None, :] * self.inner(x, y), axis=1)
        return np.concatenate([g_inner, g_weight[:, None]], axis=1)

    def value_and_gradient(self, X, Y, C) -> tuple[np.ndarray, np.ndarray]:
        """``(k(X, Y), gradient(X, Y, C))`` from one evaluation of the inner kernel; with one
        coefficient per column (prediction: the weights) no (n, m) coefficient array is formed,
        the row weights scale the inner gradient instead."""
        (x, w), (y, v) = self._split(_as_rows(X, "X")), self._split(_as_rows(Y, "Y"))
        C = np.asarray(C, dtype=np.float64)
        if C.ndim == 1:
            _coefficients(C, x.shape[0], y.shape[0])  # shape check
            cv = C * v
            k_inner, g_inner = self.inner.value_and_gradient(x, y, cv)
            g_inner *= w[:, None]
            g_weight = k_inner @ cv
        else:
            C = _coefficients(C, x.shape[0], y.shape[0])
            k_inner, g_inner = self.inner.value_and_gradient(x, y, C * w[:, None] * v[None, :])
            g_weight = np.sum(C * v[None, :] * k_inner, axis=1)
        k_inner *= w[:, None]
        k_inner *= v[None, :]
        return k_inner, np.concatenate([g_inner, g_weight[:, None]], axis=1)

    def batched(self, Xa, Xb) -> np.ndarray:
        wa, wb = Xa[..., -1], Xb[..., -1]
        return wa[..., :, None] * wb[..., None, :] * self.inner.batched(Xa[..., :-1], Xb[..., :-1])

    def mixed_batched(self, Xa, Xb, U, V) -> np.ndarray:
        # k = w v k_in(x, y): the weight columns enter linearly, so the mixed derivative has
        # four parts (x-y, x-v, w-y, w-v).
        xa, wa, xb, wb = Xa[..., :-1], Xa[..., -1], Xb[..., :-1], Xb[..., -1]
        ua, uw, vb, vw = U[..., :-1], U[..., -1], V[..., :-1], V[..., -1]
        k, dx_u, dy_v, mixed = self.inner.mixed_terms(xa, xb, ua, vb)
        return (
            wa[..., :, None] * wb[..., None, :] * mixed
            + wa[..., :, None] * vw[..., None, :] * dx_u
            + uw[..., :, None] * wb[..., None, :] * dy_v
            + uw[..., :, None] * vw[..., None, :] * k
        )

    def mixed_diag(self, X, U) -> np.ndarray:
        """(n,): ``u_i^T [d^2 k / dx dy] u_i`` at ``(x_i, x_i)``; the inner kernel's first
        derivatives vanish there (it is symmetric and smooth), which leaves two parts."""
        x, w, u, uw = X[:, :-1], X[:, -1], U[:, :-1], U[:, -1]
        return w * w * self.inner.mixed_diag(x, u) + uw * uw * self.inner.diag(x)

    def to_dict(self) -> dict:
        return {"type": self.type_name, "inner": self.inner.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> CutoffWeighted:
        """``data["inner"]`` is the inner kernel, already rebuilt (:mod:`gapx.serialization`
        rebuilds nested descriptions first)."""
        return cls(**described_settings(data, (cls.type_name,), "CutoffWeighted"))
