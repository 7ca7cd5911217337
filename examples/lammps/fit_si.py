"""Fit a small Si model for examples/lammps/in.si.lmp (labels from a Lennard-Jones potential:
a stand-in for DFT; the point is the workflow) and save it as si.gapx."""

import numpy as np
from ase.build import bulk
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator

import gapx

rng = np.random.default_rng(0)
frames = []
for _ in range(8):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    atoms.positions += rng.normal(0, 0.08, atoms.positions.shape)
    atoms.calc = LennardJones(sigma=2.1, epsilon=1.0, rc=5.0)
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    atoms.calc = SinglePointCalculator(atoms, **results)
    frames.append(atoms)
model = gapx.GAP(
    [
        gapx.TwoBody(cutoff=5.0, n_sparse=20),
        gapx.SOAP(species=["Si"], cutoff=5.0, n_max=6, l_max=4, zeta=4, n_sparse=200),
    ],
    verbose=False,
)
model.fit(frames)
model.save("si.gapx")
print("wrote si.gapx; now: gapx lammps in.si.lmp --np 2")
