"""Quickstart: build neighbour lists for a silicon crystal (grows into fit → eval → MD)."""

from __future__ import annotations

import numpy as np
from ase.build import bulk

import gapx


def main() -> None:
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (4, 4, 4)
    atoms.rattle(0.05, seed=0)
    i, j, S, d, D = gapx.neighbor_list(atoms, 5.0)
    print(f"gapx {gapx.__version__}: {len(atoms)} Si atoms, {len(i)} pairs within 5 Å")
    print(f"mean coordination within 2.6 Å: {np.count_nonzero(d < 2.6) / len(atoms):.2f}")


if __name__ == "__main__":
    main()
