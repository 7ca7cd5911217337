"""Central finite-difference checks of position and strain derivatives, shared by all tests."""

from __future__ import annotations

import numpy as np

# A derivative whose largest entry is below this is "trivially zero": checks refuse to pass it.
NONTRIVIAL = 1e-8


def numerical_position_gradient(fn, atoms, delta: float = 1e-5) -> np.ndarray:
    """d fn(atoms) / d r, shape (n_atoms, 3, *fn_shape), by central differences."""
    base = np.asarray(fn(atoms))
    grad = np.zeros((len(atoms), 3, *base.shape))
    for a in range(len(atoms)):
        for k in range(3):
            shifted = atoms.copy()
            shifted.positions[a, k] += delta
            plus = np.asarray(fn(shifted))
            shifted.positions[a, k] -= 2 * delta
            minus = np.asarray(fn(shifted))
            grad[a, k] = (plus - minus) / (2 * delta)
    return grad


def strained(atoms, strain: np.ndarray):
    """Copy of ``atoms`` with cell and positions deformed by (1 + strain)."""
    deformed = atoms.copy()
    deformation = np.eye(3) + strain
    deformed.set_cell(atoms.cell.array @ deformation.T, scale_atoms=False)
    deformed.positions = atoms.positions @ deformation.T
    return deformed


def numerical_strain_gradient(fn, atoms, delta: float = 1e-5) -> np.ndarray:
    """d fn(atoms) / d eps_ab for r -> (1 + eps) r, shape (3, 3, *fn_shape)."""
    base = np.asarray(fn(atoms))
    grad = np.zeros((3, 3, *base.shape))
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = delta
            plus = np.asarray(fn(strained(atoms, eps)))
            minus = np.asarray(fn(strained(atoms, -eps)))
            grad[a, b] = (plus - minus) / (2 * delta)
    return grad


def assert_gradients_close(analytic, numerical, rtol: float = 1e-6, atol: float = 1e-8) -> None:
    """Compare derivatives relative to their overall scale, refusing an all-zero analytic one."""
    analytic = np.asarray(analytic)
    numerical = np.asarray(numerical)
    assert analytic.shape == numerical.shape, (analytic.shape, numerical.shape)
    scale = np.max(np.abs(numerical))
    assert np.max(np.abs(analytic)) > NONTRIVIAL, "analytic gradient is trivially zero"
    error = np.max(np.abs(analytic - numerical))
    assert error <= rtol * scale + atol, f"max gradient error {error:.3e} (scale {scale:.3e})"


def check_position_gradients(fn, grad_fn, atoms, delta=1e-5, rtol=1e-6, atol=1e-8) -> None:
    """Assert grad_fn(atoms) (n_atoms, 3, ...) matches central differences of fn."""
    numerical = numerical_position_gradient(fn, atoms, delta)
    assert_gradients_close(grad_fn(atoms), numerical, rtol, atol)


def check_strain_gradients(fn, grad_fn, atoms, delta=1e-5, rtol=1e-6, atol=1e-8) -> None:
    """Assert grad_fn(atoms) (3, 3, ...) matches central differences of fn under strain."""
    assert_gradients_close(grad_fn(atoms), numerical_strain_gradient(fn, atoms, delta), rtol, atol)
