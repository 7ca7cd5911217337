"""GAP: what a fitted model is (terms, e0, sparse sets, weights, baseline), and its predictions."""

from __future__ import annotations

import copy
import math
import os

import numpy as np
import scipy.sparse
from ase.data import atomic_numbers, chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress

from . import fitting, hyperparameters, serialization, sharded_fit, shards, uncertainty
from .engine import engine_for, engine_threads
from .fitting import E0_METHODS, FittedState
from .gp.predictive import predictive_variances
from .gp.sparse_set import kmm_cholesky
from .io import read_model_file, write_model_file
from .labels import DEFAULT_KEYS
from .neighbors import StructureContext
from .terms import as_term
from .validation import positive_number

#: ``GAP.predict(std=...)``: none, all, or the energies' standard deviations only.
STD_MODES = (False, True, "energy")
#: ``GAP(optimize=...)``: fit with the given hyperparameters, or optimise them by the evidence.
OPTIMIZE_MODES = (None, "evidence")


class GAP:
    """A Gaussian Approximation Potential: a sum of sparse-GP terms, e0 and a baseline.

    Parameters
    ----------
    terms : list
        Terms implementing :class:`gapx.terms.Term` — ``gapx.TwoBody``, ``gapx.ThreeBody`` and/or
        ``gapx.SOAP`` (each carries delta, n_sparse, sparse_method).
    sigma_energy, sigma_force, sigma_virial : float
        Default noise: eV/atom (scaled by sqrt(n_atoms)), eV/Å, eV/atom (scaled by sqrt(n_atoms)).
    config_type_sigma : dict, optional
        ``{config_type: (sigma_energy, sigma_force, sigma_virial)}`` overriding the defaults; a
        frame's ``info`` may override further with ``energy_sigma``, ``force_sigma``,
        ``virial_sigma`` (same units, per atom where the default is).
    e0 : "average", "isolated_atom" or dict
        Per-species reference energies: gap_fit's average energy per atom over the training
        frames (the same for all species), the energies of ``config_type == "isolated_atom"``
        single-atom frames (which are then not fitted), or ``{symbol: eV}``.
    sparse_jitter : float
        Relative jitter: ``sparse_jitter * delta**2`` (eV^2; delta of the block's term, the prior
        variance of its local energies) is added to the diagonal of each ``K_MM`` block, so the
        regularisation does not depend on a term's energy scale. The jitter used is stored per
        sparse set (files from before it was relative keep theirs).
    seed : int
        Seeds sparse-point selection; same data, settings and seed give identical weights.
    energy_key, forces_key, virial_key, stress_key, config_type_key : str
        Label names (see :func:`gapx.labels.extract_labels`).
    baseline : object, optional
        ``calculate(atoms, context=None) -> dict(energy, energies, forces, stress)`` and
        ``to_dict()`` (``gapx.Ewald``): the GP learns reference - baseline; predictions add it
        back.
    block_memory : float
        Bytes of descriptor gradients and design rows held at once while assembling.
    memory_limit : float, optional
        Bytes each process of a fit of shard files may hold (see :mod:`gapx.fit_memory`):
        blocks shrink to stay under it, and a fit that cannot (R itself too large) is refused
        before any descriptor is computed, with the numbers.
    verbose : bool
        Print the fit summary and show progress bars.
    optimize : None or "evidence"
        ``"evidence"``: before each fit, choose delta per term and the noise sigmas (per
        config_type when the frames have one) by maximising the sparse GP's evidence
        (:func:`gapx.hyperparameters.optimize_hyperparameters`); the fit with the values found
        follows from the same statistics, without another pass over the data. The model
        keeps the values found and ``summary["evidence"]`` reports them with the evidence before
        and after.
    """

    def __init__(
        self,
        terms,
        *,
        sigma_energy: float = 0.001,
        sigma_force: float = 0.03,
        sigma_virial: float = 0.05,
        config_type_sigma: dict | None = None,
        e0="average",
        sparse_jitter: float = 1e-8,
        seed: int = 0,
        energy_key: str = DEFAULT_KEYS["energy"],
        forces_key: str = DEFAULT_KEYS["forces"],
        virial_key: str = DEFAULT_KEYS["virial"],
        stress_key: str = DEFAULT_KEYS["stress"],
        config_type_key: str = DEFAULT_KEYS["config_type"],
        baseline=None,
        block_memory: float = 256e6,
        memory_limit: float | None = None,
        verbose: bool = True,
        optimize: str | None = None,
    ):
        if not isinstance(terms, (list, tuple)):
            terms = [terms]
        if len(terms) == 0:
            raise ValueError("a GAP model needs at least one term")
        self.terms = [as_term(t) for t in terms]
        self.sigma_energy = positive_number("sigma_energy", sigma_energy)
        self.sigma_force = positive_number("sigma_force", sigma_force)
        self.sigma_virial = positive_number("sigma_virial", sigma_virial)
        self.config_type_sigma = {}
        for name, sigmas in dict(config_type_sigma or {}).items():
            if len(tuple(sigmas)) != 3:
                raise ValueError(
                    f"config_type_sigma[{name!r}] must be (sigma_energy, sigma_force, "
                    f"sigma_virial), got {sigmas!r}"
                )
            self.config_type_sigma[str(name)] = tuple(
                positive_number(f"config_type_sigma[{name!r}]", s) for s in sigmas
            )
        if isinstance(e0, dict):
            e0 = {str(k): float(v) for k, v in e0.items()}
            bad = [k for k in e0 if k not in atomic_numbers]
            if bad:
                raise ValueError(f"e0 keys must be chemical symbols, got {bad}")
        elif e0 not in E0_METHODS:
            raise ValueError(f"e0 must be a dict or one of {E0_METHODS}, got {e0!r}")
        self.e0_method = e0
        jitter = float(sparse_jitter)
        if not math.isfinite(jitter) or jitter < 0:
            raise ValueError(f"sparse_jitter must be >= 0, got {sparse_jitter!r}")
        self.sparse_jitter = jitter
        if int(seed) != seed:
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.seed = int(seed)
        self.keys = {
            "energy_key": str(energy_key),
            "forces_key": str(forces_key),
            "virial_key": str(virial_key),
            "stress_key": str(stress_key),
            "config_type_key": str(config_type_key),
        }
        if baseline is not None and not callable(getattr(baseline, "calculate", None)):
            raise TypeError("baseline must provide calculate(atoms) and to_dict()")
        self.baseline = baseline
        self.block_memory = positive_number("block_memory", block_memory)
        self.memory_limit = (
            None if memory_limit is None else positive_number("memory_limit", memory_limit)
        )
        self.verbose = bool(verbose)
        if optimize not in OPTIMIZE_MODES:
            raise ValueError(f"optimize must be one of {OPTIMIZE_MODES}, got {optimize!r}")
        self.optimize = optimize
        self.e0: dict[str, float] | None = None
        self.sparse_sets = []
        self.alpha: np.ndarray | None = None
        self.R: np.ndarray | None = None
        self.summary: dict = {}
        #: :class:`gapx.uncertainty.Calibration` of every reported std, or None (see calibrate).
        self.calibration: uncertainty.Calibration | None = None

    def fit(
        self,
        frames,
        client=None,
        *,
        checkpoint=None,
        resume: bool = False,
        checkpoint_interval: float = 600.0,
        scans=None,
    ) -> dict:
        """Fit the model to labelled frames; returns (and stores in ``.summary``) a summary.

        ``frames``: a list of ``ase.Atoms`` (a single Atoms is one frame), or training data in
        files: a path, a glob pattern, or a list of them (extxyz shards). Frames carry total
        energies, forces and/or virials (or stresses), each optional per frame; a
        ``config_type_sigma`` entry that names no frame's config_type gets a warning. The
        summary gives the number of targets, sparse points per term and kind, the memory of the
        stacked design matrix, the e0 used and the fit time.

        Shards are read where they are used (:mod:`gapx.sharded_fit`): a scan pass first reads
        each once (a missing or corrupt shard is named before the fit starts), then blocks of
        frames are read by whoever computes them, so no process holds the data set. Sparse
        points are chosen from per-block candidates (:mod:`gapx.gp.candidates`: CUR and random
        are the same sampling as on gathered rows, with another random stream).

        ``client``: a ``dask.distributed.Client``. When given, descriptors and the design-matrix
        blocks are computed on its workers, each block reduced there to its (M+1)^2 R factor;
        Atoms lists fold the factors on this process in block order, shards merge them by a tree
        on the workers first. Both are deterministic for a given data set and block size,
        whatever the cluster.

        ``checkpoint`` (shards only): a file the fit writes its progress to (after sparse
        selection, then every ``checkpoint_interval`` seconds between groups of blocks);
        ``resume=True`` continues from it, giving the uninterrupted fit's result bit for bit
        (refused when it was written for other data or settings). ``scans``: the shards'
        :func:`gapx.shards.scan_shards` when already done (the command line scans first).

        The fit is transactional: the model's fitted state changes only when the fit completes;
        a fit that raises leaves the model exactly as it was. A completed fit resets
        ``calibration`` to None: the calibration was of the previous fit's stds.
        """
        if shards.is_file_source(frames):
            if self.optimize == "evidence":
                raise ValueError(
                    "optimize='evidence' needs the frames in memory: pass a list of Atoms "
                    "(gapx.read_frames) or fit the shards without it"
                )
            paths = shards.shard_paths(frames)
            self._adopt(
                sharded_fit.fit_shards(
                    self,
                    paths,
                    client,
                    checkpoint_path=None if checkpoint is None else os.fspath(checkpoint),
                    resume=resume,
                    checkpoint_interval=checkpoint_interval,
                    scans=scans,
                )
            )
            return self.summary
        if checkpoint is not None or resume or scans is not None:
            raise ValueError("checkpoint and resume need training data in files (shards)")
        if self.optimize != "evidence":
            self._adopt(fitting.fit(self, frames, client=client))
            return self.summary
        found, statistics = hyperparameters.optimize_hyperparameters(self, frames, client=client)
        trial = copy.copy(self)
        hyperparameters.apply(trial, found)
        state = hyperparameters.fitted_state(trial, statistics, found)
        hyperparameters.apply(self, found)
        self._adopt(state)
        return self.summary

    def __getstate__(self) -> dict:
        # The compiled engine (gapx.engine) does not pickle; it is rebuilt on first use.
        state = self.__dict__.copy()
        state.pop("_engine", None)
        return state

    @property
    def R(self) -> np.ndarray | None:
        """Upper-triangular factor of the weights' posterior covariance (``FittedState.R``).

        A model imported without one (``gapx.from_quip``: QUIP's file has no covariance) gets the
        prior's, R = L^T of each K_MM = L L^T, computed here on first use: the sparse sets'
        Cholesky factors take O(M^3), which a prediction of the mean does not need."""
        if self._R is None and self.alpha is not None:
            for s in self.sparse_sets:
                if s.factor is None:
                    kernel = self.terms[s.term].kernel
                    s.factor, s.jitter = kmm_cholesky(kernel, s.points, s.delta, self.sparse_jitter)
            n_columns = self.alpha.shape[0]
            self._R = np.ascontiguousarray(
                fitting.prior_solver(self.sparse_sets).R[:n_columns, :n_columns]
            )
        return self._R

    @R.setter
    def R(self, value) -> None:
        self._R = value

    def _adopt(self, state: FittedState) -> None:
        self.e0 = state.e0
        self.sparse_sets = state.sparse_sets
        self.alpha = state.alpha
        self.R = state.R
        self.summary = state.summary
        self.calibration = None  # new fitted state, new stds: an old calibration does not hold

    @property
    def species(self) -> list[str]:
        return sorted(self.e0 or {}, key=lambda s: atomic_numbers[s])

    def _check_fitted(self) -> None:
        if self.alpha is None:
            raise ValueError("the model is not fitted: call fit(frames) or gapx.load(path)")

    def predict(self, atoms, std: bool | str = True) -> dict:
        """Energy, forces, stress, per-atom energies and their predictive standard deviations.

        Returns
        -------
        dict
            ``energy`` (eV), ``forces`` (n_atoms, 3) eV/Å, ``stress`` (6,) eV/Å^3 (Voigt, ASE sign,
            only for a 3-d cell), ``energies`` (n_atoms,) local energies (e0 included); with a
            baseline also ``energy_longrange``, ``energy_shortrange`` (and ``charges`` if it
            reports them). With ``std=True`` also the posterior standard deviations
            ``energies_std`` (n_atoms,) eV, ``energy_std`` eV, ``forces_std`` (n_atoms, 3) eV/Å
            and, for a 3-d cell, ``stress_std`` (6,) eV/Å^3; ``std="energy"`` gives only
            ``energies_std`` and ``energy_std``, at a fraction of the cost.

        Notes
        -----
        The mean (energies, forces, stress of the GP and e0) comes from the C++ prediction
        engine (:mod:`gapx.engine`), which equals the NumPy path of terms to 1e-10; the
        standard deviations and the baseline are computed in Python.

        The standard deviations are those of the sparse GP's projected-process (DTC) posterior
        (:mod:`gapx.gp.variance`): exact for local energies and forces, whose prior terms are
        local. The total energy and the stress sum over every pair of environments: their prior
        beyond the sparse points' Nyström part (the residual) goes through a pivoted Cholesky
        factorisation of rank at most ``MAX_RANK`` (64) per kind plus its exact diagonal, which
        is exact for structures with up to that many environments per kind and linear in atoms;
        measured against the exact sum, the variances differ by 1e-5 (energy) and 1e-4 (stress)
        on 108-atom Cu cells (tests) and by 1e-3 and 1e-2 on 1000-atom Si. The cost of
        ``std=True`` is dominated by the force functionals (one product of the descriptor
        gradients with the sparse points, and their local prior): about 40 times the mean
        prediction for 1000-atom Si with 520 sparse points; ``std="energy"`` costs about 4 times.
        """
        self._check_fitted()
        context = StructureContext(atoms)  # validates the structure, atomic numbers included
        numbers = context.numbers
        unknown = sorted({chemical_symbols[z] for z in numbers} - set(self.e0))
        if unknown:
            raise ValueError(f"species {unknown} are not in the model (trained on {self.species})")
        context.neighbors(max(term.cutoff for term in self.terms))
        context.check_no_overlap()
        engine = engine_for(self)
        if engine is None:
            energy, energies, dE_dr, dE_deps = self._mean_python(atoms, context)
        else:
            lists = [context.neighbors(term.cutoff) for term in self.terms]
            energy, energies, dE_dr, dE_deps = engine.compute(
                numbers.tolist(), lists, n_threads=engine_threads(self.terms)
            )
        out = {"energies": energies, "energy": float(energy), "forces": -dE_dr}
        periodic = atoms.cell.rank == 3
        if periodic:
            out["stress"] = full_3x3_to_voigt_6_stress(dE_deps) / atoms.get_volume()
        if std not in STD_MODES:
            raise ValueError(f"std must be one of {STD_MODES}, got {std!r}")
        if std:
            out.update(self._stds(atoms, context, periodic, forces=std is True))
        if self.baseline is not None:
            base = self.baseline.calculate(atoms, context=context)
            out["energy_shortrange"] = out["energy"]
            out["energy_longrange"] = float(base["energy"])
            out["energy"] += float(base["energy"])
            out["energies"] = out["energies"] + np.asarray(base["energies"])
            out["forces"] = out["forces"] + np.asarray(base["forces"])
            if periodic:
                out["stress"] = out["stress"] + np.asarray(base["stress"]).reshape(-1)[:6]
            if "charges" in base:
                out["charges"] = np.asarray(base["charges"])
        out = uncertainty.apply(self.calibration, out)  # calibrated stds, see calibrate()
        return out

    def _mean_python(self, atoms, context):
        """``(energy, energies, dE_dr, dE_deps)`` of the GP and e0 in NumPy: the path of models
        whose terms the C++ engine lacks (:mod:`gapx.engine`), and its reference in tests."""
        n_atoms = len(atoms)
        e0 = np.array([self.e0[chemical_symbols[z]] for z in context.numbers])
        energies = e0.copy()
        dE_dr = np.zeros((n_atoms, 3))
        dE_deps = np.zeros((3, 3))
        for t, term in enumerate(self.terms):
            rows = term.rows(atoms, gradients=False, context=context)
            local = np.zeros(rows.n_rows)
            dE_dX = np.zeros_like(rows.X)
            for s in self.sparse_sets:
                selected = np.nonzero(rows.kinds == s.kind)[0] if s.term == t else ()
                if len(selected) == 0:
                    continue
                a = self.alpha[s.columns]
                d2 = s.delta**2
                k, grad = term.kernel.value_and_gradient(rows.X[selected], s.points, a)
                k *= d2
                local[selected] = k @ a
                dE_dX[selected] = d2 * grad
            owners = scipy.sparse.csr_matrix(
                (rows.owner_weights, (rows.owner_atoms, rows.owner_rows)),
                shape=(n_atoms, rows.n_rows),
            )
            energies += owners @ local
            if rows.n_rows:
                dr, deps = term.backpropagate_rows(atoms, rows, dE_dX, context=context)
                dE_dr += dr
                dE_deps += deps
        return float(energies.sum()), energies, dE_dr, dE_deps

    def _stds(self, atoms, context, periodic: bool, forces: bool) -> dict:
        """Posterior standard deviations of a prediction (see :meth:`predict`): the terms' rows
        (with gradients for the force functionals) and their variances."""
        rows = [term.rows(atoms, gradients=forces, context=context) for term in self.terms]
        var = predictive_variances(
            self.terms, self.sparse_sets, self.R, rows, len(atoms), periodic, forces=forces
        )
        out = {
            "energies_std": np.sqrt(var["energies"]),
            "energy_std": float(np.sqrt(var["energy"])),
        }
        if forces:
            out["forces_std"] = np.sqrt(var["forces"])
        if "virial" in var:
            out["stress_std"] = np.sqrt(var["virial"]) / atoms.get_volume()
        return out

    def calibrate(self, frames) -> dict:
        """Calibrate the predicted stds on held-out labelled frames; returns the metrics.

        Predicts ``frames`` (labels found with the model's label keys, as in :meth:`fit`) with
        the model's own stds, fits a :class:`gapx.uncertainty.Calibration` by maximum likelihood
        (a scale and a noise floor, for energies per atom and force components separately) and
        stores it as ``calibration``. From then on every std :meth:`predict` reports (and so
        ``GAPCalculator``) is calibrated, and :meth:`save` keeps the calibration in the file.
        Calibrating again fits the model's own stds afresh (calibrations never compound); a
        refit resets ``calibration`` to None. Use frames the model was not trained on. If this
        raises, ``calibration`` is unchanged.

        Returns
        -------
        dict
            ``calibration`` (its ``to_dict()``), ``before`` and ``after``: the
            :func:`gapx.uncertainty.calibration_metrics` of the model's own and of the
            calibrated stds on ``frames``.
        """
        self._check_fitted()
        self.calibration, report, _ = uncertainty.calibrate(self, frames, progress=self.verbose)
        return report

    def save(self, path) -> None:
        """Write the fitted model to one versioned file (see :mod:`gapx.serialization`)."""
        self._check_fitted()
        self.R  # noqa: B018 - completes a pending (imported) covariance before the header is built
        write_model_file(
            os.fspath(path), serialization.model_header(self), serialization.model_arrays(self)
        )

    def to_quip(self, path, label: str = "GAP_gapx", gapx_copy: bool = True) -> None:
        """Write the model as a QUIP/GAP XML file (with sparseX files and, with ``gapx_copy``,
        the complete model as ``<path>.gapx`` beside it, which makes ``gapx.from_quip`` return
        this model exactly) that quippy's ``Potential(param_filename=path)`` and LAMMPS's
        ``pair_style quip`` evaluate to the same numbers; see :mod:`gapx.quip.xml_writer`.
        Raises ValueError for terms or baselines QUIP cannot express (GTO-basis SOAP, Ewald)."""
        from .quip.xml_writer import write_quip

        write_quip(self, path, label=label, gapx_copy=gapx_copy)


def load(path) -> GAP:
    """Load a model written by :meth:`GAP.save` (validated; no pickle, no code execution)."""
    where = f"model file {os.fspath(path)!r}"
    header, arrays = read_model_file(path)
    settings, state = serialization.decode_model(header, arrays, where)
    try:
        model = GAP(**settings, verbose=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from None
    model._adopt(state)
    model.calibration = serialization.decode_calibration(header, where)
    return model
