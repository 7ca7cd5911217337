"""Kernels: values against explicit formulas, derivatives against finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from gapx.kernels import CutoffWeighted, DotProduct, SquaredExponential
from gapx.serialization import from_dict


def kernel_from_dict(data):
    return from_dict(data, "kernel")


FD_STEP = 1e-6
FD_RTOL = 1e-6
ARD_THETA = (0.4, 0.7, 1.1, 0.9, 0.5, 1.3)


def _kernels():
    return [
        DotProduct(zeta=4, normalise=True),
        DotProduct(zeta=2.5, normalise=True),
        DotProduct(zeta=3, normalise=False),
        SquaredExponential(theta=0.7),
        CutoffWeighted(SquaredExponential(theta=0.5)),
        # One length scale per feature (QUIP's ard_se), as the three-body term's.
        SquaredExponential(theta=ARD_THETA),
        CutoffWeighted(SquaredExponential(theta=ARD_THETA[:-1])),
    ]


def _data(rng, kernel, n=5, m=4, f=6):
    X = rng.uniform(0.1, 1.0, (n, f))
    Y = rng.uniform(0.1, 1.0, (m, f))
    if isinstance(kernel, DotProduct) and not kernel.normalise:
        X /= np.linalg.norm(X, axis=1)[:, None]
        Y /= np.linalg.norm(Y, axis=1)[:, None]
    return X, Y


def _explicit(kernel, x, y):
    """One kernel value written out directly."""
    if isinstance(kernel, DotProduct):
        if kernel.normalise:
            x, y = x / np.linalg.norm(x), y / np.linalg.norm(y)
        return float(np.dot(x, y) ** kernel.zeta)
    if isinstance(kernel, SquaredExponential):
        return float(np.exp(-np.sum((x - y) ** 2 / (2 * np.asarray(kernel.theta) ** 2))))
    theta = np.asarray(kernel.inner.theta)
    return float(x[-1] * y[-1] * np.exp(-np.sum((x[:-1] - y[:-1]) ** 2 / (2 * theta**2))))


@pytest.mark.parametrize("kernel", _kernels(), ids=lambda k: k.type_name)
def test_values_match_explicit_formula(kernel, rng):
    X, Y = _data(rng, kernel)
    K = kernel(X, Y)
    expected = np.array([[_explicit(kernel, x, y) for y in Y] for x in X])
    np.testing.assert_allclose(K, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(kernel.diag(X), np.diag(kernel(X, X)), rtol=1e-12)


@pytest.mark.parametrize("kernel", _kernels(), ids=lambda k: k.type_name)
def test_derivative_matches_finite_differences(kernel, rng):
    X, Y = _data(rng, kernel)
    analytic = kernel.dk_dx(X, Y)
    numeric = np.zeros_like(analytic)
    for i in range(X.shape[0]):
        for f in range(X.shape[1]):
            plus, minus = X.copy(), X.copy()
            plus[i, f] += FD_STEP
            minus[i, f] -= FD_STEP
            numeric[i, :, f] = (kernel(plus, Y)[i] - kernel(minus, Y)[i]) / (2 * FD_STEP)
    assert np.max(np.abs(analytic)) > 1e-3
    np.testing.assert_allclose(analytic, numeric, rtol=FD_RTOL, atol=1e-9)


@pytest.mark.parametrize("kernel", _kernels(), ids=lambda k: k.type_name)
def test_contractions_agree_with_full_derivative(kernel, rng):
    X, Y = _data(rng, kernel)
    full = kernel.dk_dx(X, Y)
    rows = rng.integers(0, X.shape[0], 11)
    D = rng.normal(size=(11, X.shape[1]))
    expected = np.einsum("dmf,df->dm", full[rows], D)
    np.testing.assert_allclose(kernel.directional(X, Y, D, rows), expected, rtol=1e-12, atol=1e-13)
    C = rng.normal(size=(X.shape[0], Y.shape[0]))
    np.testing.assert_allclose(
        kernel.gradient(X, Y, C), np.einsum("im,imf->if", C, full), rtol=1e-12, atol=1e-13
    )
    c = rng.normal(size=Y.shape[0])
    np.testing.assert_allclose(
        kernel.gradient(X, Y, c), np.einsum("m,imf->if", c, full), rtol=1e-12, atol=1e-13
    )
    values, gradient = kernel.value_and_gradient(X, Y, c)
    np.testing.assert_allclose(values, kernel(X, Y), rtol=1e-12)
    np.testing.assert_allclose(gradient, kernel.gradient(X, Y, c), rtol=1e-12, atol=1e-13)


def test_normalised_dot_product_is_scale_invariant(rng):
    kernel = DotProduct(zeta=4)
    X, Y = _data(rng, kernel)
    np.testing.assert_allclose(kernel(3.0 * X, Y), kernel(X, Y), rtol=1e-12)
    np.testing.assert_allclose(np.diag(kernel(X, X)), 1.0, rtol=1e-12)
    # Scaling a row is a flat direction of the normalised kernel: its derivative along x is 0.
    along = np.einsum("imf,if->im", kernel.dk_dx(X, Y), X)
    np.testing.assert_allclose(along, 0.0, atol=1e-12)


def test_round_trip_through_dict(rng):
    for kernel in _kernels():
        X, Y = _data(rng, kernel)
        rebuilt = kernel_from_dict(kernel.to_dict())
        np.testing.assert_array_equal(rebuilt(X, Y), kernel(X, Y))


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="zeta"):
        DotProduct(zeta=0)
    with pytest.raises(ValueError, match="theta"):
        SquaredExponential(theta=-1.0)
    with pytest.raises(ValueError, match="all-zero row"):
        DotProduct(zeta=2)(np.zeros((1, 3)), np.ones((1, 3)))
    with pytest.raises(ValueError, match="unknown kernel"):
        kernel_from_dict({"type": "polynomial"})
    with pytest.raises(ValueError, match="2-d"):
        SquaredExponential()(np.ones(3), np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"theta\[1\]"):
        SquaredExponential(theta=(1.0, 0.0))
    with pytest.raises(ValueError, match="2 length scales, rows have 3 features"):
        SquaredExponential(theta=(1.0, 2.0))(np.ones((1, 3)), np.ones((1, 3)))


def _batched_kernels():
    return [k for k in _kernels() if not (isinstance(k, DotProduct) and k.normalise)]


@pytest.mark.parametrize("kernel", _batched_kernels(), ids=lambda k: k.type_name)
def test_batched_values_and_mixed_derivative_against_finite_differences(kernel, rng):
    """batched = the kernel per block; mixed_batched = d^2 k(x + a u, y + b v) / da db at 0."""
    blocks = [_data(rng, kernel, n=3, m=4) for _ in range(2)]
    Xa = np.stack([b[0] for b in blocks])
    Xb = np.stack([b[1] for b in blocks])
    U = rng.normal(size=Xa.shape)
    V = rng.normal(size=Xb.shape)
    np.testing.assert_allclose(
        kernel.batched(Xa, Xb), np.stack([kernel(x, y) for x, y in blocks]), rtol=1e-12
    )
    mixed = kernel.mixed_batched(Xa, Xb, U, V)
    h = 1e-4
    numeric = np.zeros_like(mixed)
    for b in range(2):
        for p in range(3):
            for q in range(4):
                x, y, u, v = Xa[b, p], Xb[b, q], U[b, p], V[b, q]

                def k(a, c, x=x, y=y, u=u, v=v):
                    return _explicit(kernel, x + a * u, y + c * v)

                numeric[b, p, q] = (k(h, h) - k(h, -h) - k(-h, h) + k(-h, -h)) / (4 * h * h)
    assert np.max(np.abs(mixed)) > 1e-2  # not trivially zero
    np.testing.assert_allclose(mixed, numeric, rtol=1e-5, atol=1e-7)
    # Two-dimensional arguments are one block; mixed_diag is the diagonal of the same form.
    np.testing.assert_allclose(kernel.mixed_batched(Xa[0], Xb[0], U[0], V[0]), mixed[0])
    square = kernel.mixed_batched(Xa[0], Xa[0], U[0], U[0])
    np.testing.assert_allclose(kernel.mixed_diag(Xa[0], U[0]), np.diag(square), rtol=1e-12)
