"""gapx's SOAP kernel against QUIP's (quippy-ase) on rattled, strained and liquid-like silicon.

QUIP's ``soap`` descriptor uses a different radial basis from gapx's default GTOs: equispaced
Gaussians (the density sampled at n_max radii between 0 and a little beyond the cutoff, mapped
by one fixed matrix; gapx has it as ``radial_basis="quip"``, equal to quippy element by element
in tests/test_soap_quip_basis.py), so with the GTO basis the two agree only as both basis sets
approach completeness. This file compares gapx's GTO SOAP with quippy's kernel. QUIP's
conventions, matched by gapx's defaults: rows normalised, the centre atom's own Gaussian in the
density with weight 1, 1/sqrt(2l+1) per l channel, and one trailing constant element appended
to each vector (zero for a single species), which is dropped before comparing.

Measured with the NumPy reference (identical to featomic's GTO kernel to 1e-10), mean |dK| of
the zeta = 1 kernel over all environment pairs:

* n_max 12, rattled (<= 0.2 Å) and strained crystal: ~4e-4, asserted <= 1e-3 (the issue's bar);
* n_max 12 with the liquid-like cell added: ~2e-3 (radial-basis truncation at short, disordered
  distances, identical for featomic), so the liquid is tested at n_max 16 instead;
* n_max 16, every environment incl. the liquid and 0.3 Å rattles: ~3.5e-5, asserted <= 1e-4;
  (n_max 20: ~1e-7, i.e. the same basis-independent SOAP).

Which side is truncated at n_max 12 on the liquid: against the converged SOAP (gapx at n_max 20),
gapx's n_max 12 kernel is ~1e-4 off and QUIP's ~2e-3 (also seen on a 3000 K Stillinger-Weber
liquid snapshot), so the n_max 12 liquid discrepancy is QUIP's basis converging more slowly;
``test_gapx_n12_is_near_converged_on_the_liquid`` asserts gapx's side.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from reference.soap_reference import ReferenceSOAP

import gapx

quippy_descriptors = pytest.importorskip("quippy.descriptors")

CUTOFF = 5.0
WIDTH = 1.0
L_MAX = 6
SIGMA = 0.5
MEAN_KERNEL_TOL_N12 = 1e-3
MEAN_KERNEL_TOL_N16 = 1e-4
CONVERGED_N_MAX = 20
MEAN_KERNEL_TOL_N12_TO_CONVERGED = 2e-4
NORM_TOL = 1e-10
LIQUID_DENSITY = 0.055  # atoms per Å^3; liquid Si is ~10 % denser than the crystal (0.050)
LIQUID_MIN_DISTANCE = 2.2  # Å, minimum-image hard-core distance of the random liquid-like cell


def quip_string(n_max: int) -> str:
    return (
        f"soap cutoff={CUTOFF} cutoff_transition_width={WIDTH} n_max={n_max} l_max={L_MAX} "
        f"atom_sigma={SIGMA} central_weight=1.0 normalise=T n_species=1 species_Z={{14}}"
    )


def liquid_like(rng, n_atoms: int) -> Atoms:
    """Random cubic Si cell at liquid density, no two atoms (any image) closer than 2.2 Å."""
    length = (n_atoms / LIQUID_DENSITY) ** (1 / 3)
    positions = []
    while len(positions) < n_atoms:
        trial = rng.uniform(0, length, 3)
        minimum_image = [(trial - p + length / 2) % length - length / 2 for p in positions]
        if all(np.linalg.norm(v) >= LIQUID_MIN_DISTANCE for v in minimum_image):
            positions.append(trial)
    return Atoms(["Si"] * n_atoms, positions=positions, cell=np.eye(3) * length, pbc=True)


def silicon_environments(rattles, liquid: bool):
    """Seeded diamond Si rattled by ``rattles`` Å, two cells strained by up to 4 % (and
    rattled 0.1 Å), and optionally a 16-atom liquid-like cell."""
    rng = np.random.default_rng(314)
    frames = []
    for rattle in rattles:
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        atoms.rattle(rattle, seed=int(rng.integers(1 << 30)))
        frames.append(atoms)
    for _ in range(2):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        strain = rng.uniform(-0.04, 0.04, (3, 3))
        strain = 0.5 * (strain + strain.T)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
        atoms.rattle(0.1, seed=int(rng.integers(1 << 30)))
        frames.append(atoms)
    if liquid:
        frames.append(liquid_like(rng, 16))
    return frames


# (n_max, environments, tolerance): the n_max 12 bar on the crystal, and the tighter
# n_max 16 comparison that includes the liquid-like cell and the largest rattles.
SETTINGS = {
    "n12_crystal": (12, dict(rattles=(0.05, 0.1, 0.2), liquid=False), MEAN_KERNEL_TOL_N12),
    "n16_all": (16, dict(rattles=(0.05, 0.15, 0.3), liquid=True), MEAN_KERNEL_TOL_N16),
}


def quip_features(frames, n_max: int) -> np.ndarray:
    descriptor = quippy_descriptors.Descriptor(quip_string(n_max))
    n_features = ReferenceSOAP(["Si"], n_max=n_max, l_max=L_MAX).n_features
    blocks = []
    for atoms in frames:
        data = np.asarray(descriptor.calc(atoms)["data"])
        assert data.shape == (len(atoms), n_features + 1)
        # The trailing constant element must be zero for one species, else dropping it is wrong.
        np.testing.assert_allclose(data[:, -1], 0.0, atol=NORM_TOL)
        blocks.append(data[:, :-1])
    return np.concatenate(blocks)


def gapx_features(frames, n_max: int) -> np.ndarray:
    soap = gapx.SOAP(
        species=["Si"],
        cutoff=CUTOFF,
        n_max=n_max,
        l_max=L_MAX,
        atom_sigma=SIGMA,
        cutoff_transition_width=WIDTH,
        central_weight=1.0,
    )
    return np.concatenate([soap.compute(atoms) for atoms in frames])


def reference_power_spectra(frames, n_max: int) -> list[np.ndarray]:
    """Unnormalised reference power spectra, one (n_atoms, n_features) array per frame."""
    reference = ReferenceSOAP(["Si"], CUTOFF, n_max, L_MAX, SIGMA, WIDTH, central_weight=1.0)
    return [reference.compute_unnormalised(atoms) for atoms in frames]


def normalised_rows(blocks) -> np.ndarray:
    stacked = np.concatenate(blocks)
    return stacked / np.linalg.norm(stacked, axis=1, keepdims=True)


def mean_kernel_difference(x: np.ndarray, y: np.ndarray) -> float:
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=NORM_TOL)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=NORM_TOL)
    return float(np.mean(np.abs(x @ x.T - y @ y.T)))


@pytest.fixture(scope="module", params=list(SETTINGS))
def setting(request):
    n_max, environments, tolerance = SETTINGS[request.param]
    frames = silicon_environments(**environments)
    reference = reference_power_spectra(frames, n_max)
    return request.param, n_max, frames, quip_features(frames, n_max), reference, tolerance


def test_gapx_kernel_matches_quippy(setting):
    if not hasattr(gapx, "SOAP"):
        pytest.skip("gapx.SOAP is not built yet")
    name, n_max, frames, quip, _, tolerance = setting
    ours = gapx_features(frames, n_max)
    assert ours.shape == quip.shape
    difference = mean_kernel_difference(ours, quip)
    print(f"\ngapx vs quippy ({name}, l_max {L_MAX}): mean |dK| = {difference:.3e}")
    assert difference <= tolerance


def test_reference_kernel_matches_quippy(setting):
    """The same comparison for the NumPy reference, so the harness is checked without gapx."""
    name, n_max, frames, quip, reference, tolerance = setting
    difference = mean_kernel_difference(normalised_rows(reference), quip)
    print(f"\nreference vs quippy ({name}, l_max {L_MAX}): mean |dK| = {difference:.3e}")
    assert difference <= tolerance


def test_kernel_comparison_is_sensitive(setting):
    """A wrong convention (no 1/sqrt(2l+1) weight) must fail the same threshold."""
    name, n_max, frames, quip, reference, tolerance = setting
    l_weight = np.sqrt(2 * np.arange(L_MAX + 1) + 1.0)
    wrong = [(p.reshape(len(p), -1, L_MAX + 1) * l_weight).reshape(len(p), -1) for p in reference]
    assert mean_kernel_difference(normalised_rows(wrong), quip) > tolerance


def test_gapx_n12_is_near_converged_on_the_liquid():
    """On every environment incl. the liquid, gapx at n_max 12 is within 2e-4 of the converged
    SOAP, while QUIP's n_max 12 is several times further from it (its basis is truncated)."""
    frames = silicon_environments(rattles=(0.05, 0.15, 0.3), liquid=True)
    converged = gapx_features(frames, CONVERGED_N_MAX)
    ours = mean_kernel_difference(gapx_features(frames, 12), converged)
    quip = mean_kernel_difference(quip_features(frames, 12), converged)
    print(f"\nmean |dK| to n_max {CONVERGED_N_MAX}: gapx n12 {ours:.3e}, quip n12 {quip:.3e}")
    assert ours <= MEAN_KERNEL_TOL_N12_TO_CONVERGED
    assert quip > 3 * ours
