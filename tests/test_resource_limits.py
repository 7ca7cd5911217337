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

import pytest
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
        lambda: _core.neighbor_list(*args, 3.0, n_threads=n_threads),
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
