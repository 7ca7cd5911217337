"""Writes model_v1.gapx and model_v1_predictions.npz with gapx at commit 17064f5 (format 1).

A TwoBody + SOAP model with an Ewald baseline fitted to the first 20 ethanol training frames,
and its predictions (energy, forces, local energies, stds; stress for a periodic copy), so that
tests/test_model_file_compat.py can check that later versions load the file and predict the same
numbers bit for bit. Run from the repository root: python tests/data/make_model_v1.py
"""

from __future__ import annotations

import os

import ase.io
import numpy as np

import gapx

HERE = os.path.dirname(os.path.abspath(__file__))


def structures():
    """The structures the stored predictions are for: a molecule and a periodic copy."""
    test = ase.io.read(os.path.join(HERE, "ethanol_test_20.extxyz"), ":2")
    molecule = test[0].copy()
    periodic = test[1].copy()
    periodic.calc = None
    periodic.set_cell([[9.0, 0.0, 0.0], [0.5, 8.5, 0.0], [0.3, 0.2, 9.5]])
    periodic.center()
    periodic.pbc = True
    molecule.calc = None
    return [molecule, periodic]


def main() -> None:
    frames = ase.io.read(os.path.join(HERE, "ethanol_train_50.extxyz"), ":20")
    model = gapx.GAP(
        [
            gapx.TwoBody(cutoff=4.0, n_sparse=8),
            gapx.SOAP(species=["C", "H", "O"], cutoff=4.0, n_max=4, l_max=3, n_sparse=30),
        ],
        sigma_energy=0.001,
        sigma_force=0.03,
        baseline=gapx.Ewald(charges={"H": 0.1, "C": -0.1, "O": -0.4}),
        seed=0,
        verbose=False,
    )
    model.fit(frames)
    model.save(os.path.join(HERE, "model_v1.gapx"))
    arrays = {}
    for n, atoms in enumerate(structures()):
        for key, value in model.predict(atoms, std=True).items():
            arrays[f"{n}_{key}"] = np.asarray(value)
    np.savez_compressed(os.path.join(HERE, "model_v1_predictions.npz"), **arrays)


if __name__ == "__main__":
    main()
