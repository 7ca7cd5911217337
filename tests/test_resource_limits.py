"""Absurd requests (threads, memory, descriptor sizes) are refused with a clear ValueError.

Each offending call runs in a subprocess, because before these limits it crashed the process
(a segfault in the OpenMP runtime, std::bad_alloc after tens of GB): the test checks the message
and that the child exited cleanly, and the subprocess timeout is the only check that the refusal
is fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

import gapx
from gapx import _core

TIMEOUT = 60  # s: the refusals take milliseconds, the failures they replace took much longer


def run_python(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter; return the finished process (never a signal)."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode >= 0, f"killed by signal {-result.returncode}:\n{result.stderr}"
    return result


def assert_value_error(code: str, *fragments: str) -> str:
    """Run ``code``, which must raise ValueError; return its message after checking fragments."""
    body = textwrap.indent(textwrap.dedent(code).strip("\n"), "    ")
    wrapped = (
        f"import sys\ntry:\n{body}\n"
        "except ValueError as error:\n    print(error)\n    sys.exit(0)\n"
        "sys.exit('no ValueError raised')\n"
    )
    result = run_python(wrapped)
    assert result.returncode == 0, result.stderr
    message = result.stdout.strip()
    for fragment in fragments:
        assert fragment in message, message
    return message


SILICON = """
import ase.build
import gapx
atoms = ase.build.bulk("Si", "diamond", a=5.43)
"""


# ---------------------------------------------------------------------------------------------
# 1. threads


def test_absurd_thread_count_is_refused_by_soap():
    message = assert_value_error(
        SILICON + 'gapx.SOAP(species=["Si"], n_threads=100000).compute(atoms)',
        "n_threads must be between 1 and",
        "got 100000",
    )
    assert "available processors" in message


@pytest.mark.parametrize("n_threads", [-1, 100000])
def test_thread_count_checked_by_every_core_entry_point(n_threads):
    atoms = bulk("Si", "diamond", a=5.43)
    args = (atoms.positions, atoms.cell.array, (True, True, True))
    soap = _core.PowerSpectrum(
        cutoff=3.0,
        n_max=2,
        l_max=2,
        atom_sigma=0.5,
        transition_width=0.5,
        central_weight=1.0,
        species=[14],
    )
    numbers = atoms.numbers.astype("int32")
    calls = [
        lambda: _core.build_neighbor_list(*args, 3.0, n_threads=n_threads),
        lambda: soap.compute(*args, numbers, n_threads=n_threads),
        lambda: soap.compute_gradients(*args, numbers, n_threads=n_threads),
        lambda: soap.backpropagate(
            *args, numbers, [[0.0] * soap.n_features] * len(atoms), n_threads=n_threads
        ),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=f"n_threads must be between 1 and .*got {n_threads}"):
            call()


def test_generous_thread_count_still_works():
    atoms = bulk("Si", "diamond", a=5.43)
    reference = gapx.SOAP(species=["Si"], n_threads=1).compute(atoms)
    many = gapx.SOAP(species=["Si"], n_threads=64).compute(atoms)
    assert (reference == many).all()


def test_absurd_omp_num_threads_is_capped_not_fatal():
    code = SILICON + 'print(gapx.SOAP(species=["Si"]).compute(atoms).shape)'
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "100000"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(2, 252)"


# ---------------------------------------------------------------------------------------------
# 2. memory of the neighbour list (and of the SOAP calls that build one)


def test_huge_cutoff_on_a_tiny_periodic_cell_is_refused_before_allocating():
    # ~1e9 pairs, 64 GB: once 13 s of scanning and then std::bad_alloc.
    assert_value_error(
        """
        import ase
        import gapx
        atoms = ase.Atoms("Si2", positions=[[0, 0, 0], [1.3, 1.3, 1.3]], cell=[2.5] * 3, pbc=True)
        gapx.neighbor_list(atoms, 1000.0)
        """,
        "cutoff 1000 Å is too large for this structure",
        "about 1.1e+09 pairs",
        "64.3 GB",
        "periodic images of the cell",
        "max_bytes",
    )


def test_nearly_flat_periodic_cell_is_refused_before_allocating():
    # One cell vector of height 1e-6 Å: the cutoff sphere spans ~4e7 images of the cell along it.
    assert_value_error(
        """
        import ase
        import gapx
        atoms = ase.Atoms(
            "Si4",
            scaled_positions=[[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0], [0, 0.5, 0]],
            cell=[[5, 0, 0], [0, 5, 0], [0, 0, 1e-6]],
            pbc=True,
        )
        gapx.neighbor_list(atoms, 20.0)
        """,
        "cutoff 20 Å is too large for this structure",
        "2.1e+10 pairs",
        "TB",
    )


def test_max_bytes_is_the_budget():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (3, 3, 3)
    i, *_ = gapx.neighbor_list(atoms, 5.0, max_bytes=10**8)
    assert len(i) * 60 < 10**8
    with pytest.raises(ValueError, match=r"neighbour list would have about \d+ pairs"):
        gapx.neighbor_list(atoms, 5.0, max_bytes=len(i) * 60 // 10)
    with pytest.raises(ValueError, match="max_bytes must be positive"):
        _core.build_neighbor_list(atoms.positions, atoms.cell.array, (True,) * 3, 5.0, max_bytes=-1)


def test_clustered_atoms_are_refused_by_the_exact_count():
    # 500 atoms in a 3 Å cube inside a 100 Å periodic box: the uniform-density estimate
    # (~230 pairs) is far too low, and the exact count after the counting pass refuses.
    rng = np.random.default_rng(0)
    atoms = Atoms("Ar500", positions=rng.uniform(0, 3, (500, 3)), cell=[100] * 3, pbc=True)
    i, *_ = gapx.neighbor_list(atoms, 6.0)
    assert len(i) == 500 * 499
    with pytest.raises(ValueError, match=r"would have 249500 pairs and take 15 MB"):
        gapx.neighbor_list(atoms, 6.0, max_bytes=10**6)


def test_shift_vectors_of_far_away_atoms():
    cell = np.diag([5.43] * 3)
    far = 5.43 * round(1e10 / 5.43)  # ~1e10 Å, a whole number of cells
    atoms = Atoms("Si2", positions=[[0, 0, 0], [1.3 + far, 1.3, 1.3]], cell=cell, pbc=True)
    i, j, S, d, D = gapx.neighbor_list(atoms, 3.0)
    assert len(i) == 2
    assert S.dtype == np.int32
    assert abs(S[0, 0]) > 1.8e9  # ~1e10 / 5.43, close to the int32 limit but exact
    expected = atoms.positions[j] - atoms.positions[i] + S @ cell
    np.testing.assert_allclose(D, expected, atol=1e-5)
    np.testing.assert_allclose(d, np.sqrt(3 * 1.3**2), atol=1e-5)

    atoms.positions[1, 0] += 1e11  # 2e10 cells away: the shift would not fit in int32
    with pytest.raises(ValueError, match="beyond the int32 range.*ase.Atoms.wrap"):
        gapx.neighbor_list(atoms, 3.0)
    atoms.positions[1, 0] = 1e300
    with pytest.raises(ValueError, match="too far for its position in the cell to be resolved"):
        gapx.neighbor_list(atoms, 3.0)


def test_soap_calls_respect_max_bytes():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (3, 3, 3)
    soap = gapx.SOAP(species=["Si"])
    args = (atoms.positions, atoms.cell.array, (True,) * 3, atoms.numbers.astype("int32"))
    soap._core.compute(*args, max_bytes=10**7)
    with pytest.raises(ValueError, match="the SOAP descriptors of 216 atoms .* more than"):
        soap._core.compute(*args, max_bytes=10**5)
    with pytest.raises(ValueError, match="the SOAP gradients of 216 atoms .* gradient pairs"):
        soap._core.compute_gradients(*args, max_bytes=10**7)
    with pytest.raises(ValueError, match="neighbour list"):
        soap._core.backpropagate(*args, np.zeros((216, soap.n_features)), max_bytes=10**5)


# ---------------------------------------------------------------------------------------------
# 3. descriptor sizes, checked before anything is allocated or tabulated


def test_huge_n_max_is_refused_before_allocating():
    assert_value_error(
        'import gapx\ngapx.SOAP(species=["Si"], n_max=10**6)',
        "n_max = 1000000 is too large (at most 64)",
        "64 TB",
    )


def test_huge_cutoff_is_refused_before_tabulating():
    # Once ~40 s of quadrature for a 4.6 GB table.
    assert_value_error(
        'import gapx\ngapx.SOAP(species=["Si"], cutoff=1e4)',
        "the radial spline table for cutoff 10000 Å, atom_sigma 0.5 Å, n_max 8 and l_max 6",
        "2560000 intervals",
        "4.59 GB (limit 500 MB)",
    )
    assert_value_error(
        'import gapx\ngapx.SOAP(species=["Si"], atom_sigma=1e-300)',
        "the radial spline table",
        "(limit 500 MB)",
    )


def test_too_many_features_are_refused():
    with pytest.raises(
        ValueError, match=r"89 species, n_max 20 and l_max 30 would have 4\.9e\+07 "
    ):
        gapx.SOAP(species=list(range(1, 90)), n_max=20, l_max=30)


@pytest.mark.parametrize(
    ("cutoff", "atom_sigma", "n_max", "l_max"),
    [(5.0, 0.5, 8, 6), (20.0, 0.3, 11, 30), (5.0, 0.3, 20, 30)],
)
def test_large_legitimate_settings_still_work(cutoff, atom_sigma, n_max, l_max):
    soap = gapx.SOAP(
        species=["Si"],
        cutoff=cutoff,
        atom_sigma=atom_sigma,
        n_max=n_max,
        l_max=l_max,
        cutoff_transition_width=1.0,
    )
    assert soap.n_features == n_max * (n_max + 1) // 2 * (l_max + 1)
    values = soap.compute(bulk("Si", "diamond", a=5.43))
    assert np.allclose(np.linalg.norm(values, axis=1), 1.0)
