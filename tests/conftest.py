"""Shared structures and a seeded random generator for the tests."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, molecule


@pytest.fixture
def rng():
    return np.random.default_rng(20261124)


@pytest.fixture
def water():
    return molecule("H2O")


@pytest.fixture
def diamond_si():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=1)
    return atoms


@pytest.fixture
def rocksalt_nacl():
    return bulk("NaCl", "rocksalt", a=5.64, cubic=True)
