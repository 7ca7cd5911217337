"""Incremental sparse-GP updates (gapx.learning)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from structures import strained_fcc_cells

import gapx
from gapx import fitting
from gapx.gp.selection import residual_variance_rows
from gapx.kernels import DotProduct
from gapx.learning import IncrementalFit

# An updated model must equal a from-scratch fit on the same frames and sparse points.
UPDATE_TOL = 1e-8  # eV, eV/Å, eV/Å^3


def small_model(**kwargs) -> gapx.GAP:
    return gapx.GAP(
        [
            gapx.TwoBody(cutoff=4.0, n_sparse=8),
            gapx.SOAP(species=["Cu"], cutoff=4.0, n_max=3, l_max=2, n_sparse=10),
        ],
        sigma_force=0.05,
        verbose=False,
        **kwargs,
    )


def predictions(state, structures) -> list[dict]:
    model = small_model()
    model._adopt(state)
    return [model.predict(atoms, std=False) for atoms in structures]


def assert_same_predictions(state, reference, structures):
    for got, want in zip(
        predictions(state, structures), predictions(reference, structures), strict=True
    ):
        assert abs(got["energy"] - want["energy"]) < UPDATE_TOL
        np.testing.assert_allclose(got["forces"], want["forces"], rtol=0, atol=UPDATE_TOL)
        np.testing.assert_allclose(got["stress"], want["stress"], rtol=0, atol=UPDATE_TOL)
        assert np.abs(want["forces"]).max() > 0.1  # not trivially equal


def reference_fit(state, frames):
    """A from-scratch fit on ``frames`` with the state's e0 and sparse points."""
    points = {(s.term, s.kind): s.points for s in state.sparse_sets}
    return fitting.fit(small_model(), frames, e0=state.e0, sparse_points=points)


@pytest.fixture(scope="module")
def cu_frames():
    frames = strained_fcc_cells(np.random.default_rng(11), 12, repeat=(2, 1, 1))
    # One frame without stress and one without forces: the layouts of mixed labels.
    frames[5].calc = SinglePointCalculator(
        frames[5], energy=frames[5].get_potential_energy(), forces=frames[5].get_forces()
    )
    frames[8].calc = SinglePointCalculator(frames[8], energy=frames[8].get_potential_energy())
    return frames


@pytest.fixture(scope="module")
def test_structures():
    return strained_fcc_cells(np.random.default_rng(12), 3, repeat=(2, 1, 1))


@pytest.mark.parametrize("descriptor_memory", [1e9, 0.0])
def test_updates_equal_a_full_fit_with_the_same_sparse_points(
    cu_frames, test_structures, descriptor_memory
):
    learner = IncrementalFit.fit(
        small_model(), cu_frames[:3], new_sparse_per_frame=3, descriptor_memory=descriptor_memory
    )
    sizes = [learner.n_columns]
    for batch in ((3, 5), (5, 6), (6, 9), (9, 12)):
        report = learner.add(cu_frames[slice(*batch)])
        sizes.append(report["n_sparse_total"])
        state = learner.state()
        assert_same_predictions(state, reference_fit(state, cu_frames[: batch[1]]), test_structures)
    assert sizes[-1] > sizes[0]  # sparse points were added along the way
    assert learner.stats["updates"] == 4
    assert state.summary["learning"]["n_input_frames"] == 12
    assert state.summary["n_frames"] == 12
    if descriptor_memory == 0:
        assert learner.stats["recomputed_blocks"] > 0
    again = IncrementalFit.fit(
        small_model(), cu_frames[:3], new_sparse_per_frame=3, descriptor_memory=descriptor_memory
    )
    for batch in ((3, 5), (5, 6), (6, 9), (9, 12)):
        again.add(cu_frames[slice(*batch)])
    np.testing.assert_array_equal(again.state().alpha, state.alpha)  # deterministic


def test_update_without_new_points_folds_rows(cu_frames, test_structures):
    learner = IncrementalFit.fit(small_model(), cu_frames[:4], new_sparse_per_frame=0)
    n_columns = learner.n_columns
    learner.add(cu_frames[4:6])
    learner.add(cu_frames[6:7])
    assert learner.n_columns == n_columns
    state = learner.state()
    assert_same_predictions(state, reference_fit(state, cu_frames[:7]), test_structures)


def test_first_fit_matches_gap_fit(cu_frames, test_structures):
    model = small_model()
    model.fit(cu_frames[:4])
    learner = IncrementalFit.fit(small_model(), cu_frames[:4])
    state = learner.state()
    for s, t in zip(state.sparse_sets, model.sparse_sets, strict=True):
        np.testing.assert_array_equal(s.points, t.points)
    fitted = fitting.FittedState(model.e0, model.sparse_sets, model.alpha, model.R)
    assert_same_predictions(state, fitted, test_structures)
    given = reference_fit(fitted, cu_frames[:4])  # fitting.fit with given points = GAP.fit
    np.testing.assert_allclose(given.alpha, model.alpha, rtol=1e-12, atol=0)


def test_checkpoint_round_trip_continues_identically(cu_frames):
    learner = IncrementalFit.fit(small_model(), cu_frames[:3])
    learner.add(cu_frames[3:5])
    restored = IncrementalFit.from_arrays(small_model(), cu_frames[:5], learner.to_arrays())
    np.testing.assert_array_equal(restored.state().alpha, learner.state().alpha)
    learner.add(cu_frames[5:7])
    restored.add(cu_frames[5:7])
    np.testing.assert_array_equal(restored.state().alpha, learner.state().alpha)
    with pytest.raises(ValueError, match="holds 7 frames, 6 given"):
        IncrementalFit.from_arrays(small_model(), cu_frames[:6], learner.to_arrays())


def test_failed_update_leaves_the_fit_unchanged(cu_frames):
    learner = IncrementalFit.fit(small_model(), cu_frames[:3])
    before = learner.state()
    aluminium = cu_frames[3].copy()
    aluminium.numbers[0] = 13
    aluminium.calc = SinglePointCalculator(aluminium, energy=1.0)
    with pytest.raises(ValueError, match=r"species \['Al'\] have no e0"):
        learner.add([aluminium])
    overlapping = cu_frames[4].copy()
    overlapping.positions[1] = overlapping.positions[0] + 0.01
    overlapping.calc = SinglePointCalculator(overlapping, energy=1.0)
    with pytest.raises(ValueError, match="frame 0"):
        learner.add([overlapping])
    np.testing.assert_array_equal(learner.state().alpha, before.alpha)
    assert learner.n_frames == 3


def test_residual_variance_picks_the_novel_row_first_and_no_duplicate(rng):
    kernel = DotProduct(zeta=2)
    base = rng.normal(size=(1, 6))
    near = base + 1e-4 * rng.normal(size=(5, 6))
    novel = rng.normal(size=(1, 6))
    X = np.vstack([near, novel, near[:1]])
    chosen = residual_variance_rows(kernel, X, 1.0, 3, 1e-4, points=base, factor=np.eye(1))
    assert chosen[0] == 5
    assert len(chosen) == 1  # the near-copies of the set's point are represented already
    alone = residual_variance_rows(kernel, np.vstack([novel, novel]), 1.0, 2, 1e-4)
    assert alone.tolist() == [0]
