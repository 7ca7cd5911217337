"""GAP: descriptor terms + per-species e0 + sparse-GP weights (+ an optional baseline)."""

from __future__ import annotations

import collections
import itertools
import logging
import math
import os
import time

import numpy as np
import scipy.sparse
from ase.data import atomic_numbers, chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress
from tqdm.auto import tqdm

from . import sparse_gp
from ._arrays import positive_number
from .descriptors.base import SOAPTerm, as_term
from .io import FORMAT_VERSION, extract_labels, write_model_file
from .neighbors import check_no_overlap, neighbor_list
from .sparse_gp import SparseSet

logger = logging.getLogger("gapx")

E0_METHODS = ("average", "isolated_atom")


def _term_from_dict(data: dict):
    """Rebuild a term from its ``to_dict()`` (fixed registry, no code execution)."""
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "two_body":
        from .descriptors.two_body import TwoBody

        return TwoBody.from_dict(data)
    if kind == "soap":
        return SOAPTerm.from_dict(data)
    raise ValueError(f"unknown term type {kind!r} (known: two_body, soap)")


def _baseline_from_dict(data: dict):
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "ewald":
        from .ewald import Ewald

        return Ewald.from_dict(data["params"])
    raise ValueError(f"unknown baseline type {kind!r} (known: ewald)")


class GAP:
    """A Gaussian Approximation Potential: a sum of sparse-GP terms, e0 and a baseline.

    Parameters
    ----------
    terms : list
        ``gapx.TwoBody`` and/or ``gapx.SOAP`` (each carries delta, n_sparse, sparse_method).
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
        Added to the diagonal of each ``K_MM`` block (eV^2).
    seed : int
        Seeds sparse-point selection; same data, settings and seed give identical weights.
    energy_key, forces_key, virial_key, stress_key, config_type_key : str
        Label names (see :func:`gapx.io.extract_labels`).
    baseline : object, optional
        ``calculate(atoms) -> dict(energy, energies, forces, stress)`` and ``to_dict()``
        (``gapx.Ewald``): the GP learns reference - baseline; predictions add it back.
    block_memory : float
        Bytes of descriptor gradients and design rows held at once while assembling.
    verbose : bool
        Print the fit summary and show progress bars.
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
        energy_key: str = "energy",
        forces_key: str = "forces",
        virial_key: str = "virial",
        stress_key: str = "stress",
        config_type_key: str = "config_type",
        baseline=None,
        block_memory: float = 256e6,
        verbose: bool = True,
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
        self.verbose = bool(verbose)
        self.e0: dict[str, float] | None = None
        self.sparse_sets: list[SparseSet] = []
        self.alpha: np.ndarray | None = None
        self.R: np.ndarray | None = None
        self.summary: dict = {}

    # ------------------------------------------------------------------------------------
    # Fitting
    # ------------------------------------------------------------------------------------

    def _sigmas(self, labels, n_atoms: int) -> tuple[float, float, float]:
        sigma = (self.sigma_energy, self.sigma_force, self.sigma_virial)
        if labels.config_type is not None and labels.config_type in self.config_type_sigma:
            sigma = self.config_type_sigma[labels.config_type]
        e, f, v = sigma
        e = labels.energy_sigma if labels.energy_sigma is not None else e
        f = labels.force_sigma if labels.force_sigma is not None else f
        v = labels.virial_sigma if labels.virial_sigma is not None else v
        root = math.sqrt(n_atoms)
        return e * root, f, v * root

    def _compute_e0(self, frames, labels, fit_index) -> dict[str, float]:
        species = sorted({chemical_symbols[z] for a in frames for z in a.numbers})
        if isinstance(self.e0_method, dict):
            missing = [s for s in species if s not in self.e0_method]
            if missing:
                raise ValueError(f"e0 has no entry for species {missing}")
            return {s: self.e0_method[s] for s in species}
        if self.e0_method == "isolated_atom":
            e0 = {}
            for n, (atoms, lab) in enumerate(zip(frames, labels, strict=True)):
                if lab.config_type != "isolated_atom":
                    continue
                if len(atoms) != 1 or lab.energy is None:
                    raise ValueError(
                        f"frame {n}: an isolated_atom frame must have one atom and an energy"
                    )
                energy = lab.energy - self._baseline_energy(atoms)
                e0[chemical_symbols[atoms.numbers[0]]] = energy
            missing = [s for s in species if s not in e0]
            if missing:
                raise ValueError(f"e0='isolated_atom' but no isolated_atom frame for {missing}")
            return e0
        per_atom = [
            (labels[n].energy - self._baseline_energy(frames[n])) / len(frames[n])
            for n in fit_index
            if labels[n].energy is not None
        ]
        average = float(np.mean(per_atom)) if per_atom else 0.0
        if not per_atom:
            logger.warning("e0='average' but no frame has an energy: e0 set to 0")
        return dict.fromkeys(species, average)

    def _baseline_energy(self, atoms) -> float:
        if self.baseline is None:
            return 0.0
        return float(self.baseline.calculate(atoms)["energy"])

    def fit(self, frames, client=None) -> dict:
        """Fit the model to labelled frames; returns (and stores in ``.summary``) a summary.

        Frames carry total energies, forces and/or virials (or stresses), each optional per
        frame. The summary gives the number of targets, sparse points per term and kind, the
        memory of the stacked design matrix, the e0 used and the fit time.

        ``client``: a ``dask.distributed.Client``. When given, descriptors and the design-matrix
        blocks are computed on its workers, each block reduced there to its (M+1)^2 R factor,
        and the factors are folded on this process in block order (deterministic for a given
        data set and block size, whatever the cluster).
        """
        start = time.perf_counter()
        clock = _PhaseClock()
        frames = list(frames)
        if not frames:
            raise ValueError("fit needs at least one frame")
        labels = [extract_labels(a, n, **self.keys) for n, a in enumerate(frames)]
        for n, atoms in enumerate(frames):
            try:
                check_no_overlap(atoms)
            except ValueError as error:
                raise ValueError(f"frame {n}: {error}") from None
        fit_index = [
            n
            for n in range(len(frames))
            if not (self.e0_method == "isolated_atom" and labels[n].config_type == "isolated_atom")
        ]
        if not fit_index:
            raise ValueError("no frames left to fit after removing isolated_atom frames")
        self.e0 = self._compute_e0(frames, labels, fit_index)
        e0_by_number = np.zeros(len(chemical_symbols))
        for symbol, value in self.e0.items():
            e0_by_number[atomic_numbers[symbol]] = value

        targets = []
        for n in fit_index:
            atoms, lab = frames[n], labels[n]
            base = self.baseline.calculate(atoms) if self.baseline is not None else None
            energy = forces = virial = None
            if lab.energy is not None:
                energy = lab.energy - e0_by_number[atoms.numbers].sum()
                if base is not None:
                    energy -= float(base["energy"])
            if lab.forces is not None:
                forces = lab.forces - (base["forces"] if base is not None else 0.0)
            if lab.virial is not None:
                virial = full_3x3_to_voigt_6_stress(lab.virial)
                if base is not None:
                    virial = virial + np.asarray(base["stress"]) * atoms.get_volume()
            targets.append((energy, forces, virial, self._sigmas(lab, len(atoms))))
        fit_frames = [frames[n] for n in fit_index]

        # Pass 1: descriptor values only, for sparse-point selection.
        values = [dict() for _ in self.terms]
        gradient_bytes = _gradient_bytes(fit_frames, self.terms)
        blocks = _frame_blocks(gradient_bytes, self.block_memory)
        for block_values in _map_blocks(
            client,
            _descriptor_values,
            self.terms,
            [([fit_frames[k] for k in b],) for b in blocks],
            [len(b) for b in blocks],
            desc="descriptors",
            verbose=self.verbose,
        ):
            for t, by_kind in enumerate(block_values):
                for kind, X in by_kind.items():
                    values[t].setdefault(kind, []).append(X)
        clock.lap("descriptors")
        self.sparse_sets = []
        offset = 0
        for t, term in enumerate(self.terms):
            for kind in sorted(values[t]):
                X = np.concatenate(values[t][kind])
                rng = np.random.default_rng([self.seed, t, kind])
                points = sparse_gp.select_sparse(
                    X,
                    term.n_sparse,
                    term.sparse_method,
                    rng,
                    uniform=getattr(term, "uniform_points", None),
                )
                L, jitter = sparse_gp.kmm_cholesky(
                    term.kernel, points, term.delta, self.sparse_jitter
                )
                self.sparse_sets.append(SparseSet(t, kind, points, offset, term.delta, jitter, L))
                offset += points.shape[0]
        del values
        n_columns = offset
        clock.lap("sparse_selection")

        n_energy = sum(e is not None for e, _, _, _ in targets)
        n_force = sum(
            3 * len(a) for a, t in zip(fit_frames, targets, strict=True) if t[1] is not None
        )
        n_virial = sum(6 for _, _, v, _ in targets if v is not None)
        n_obs = n_energy + n_force + n_virial
        # The streamed QR holds R (M+1)^2 plus one block of rows and gradients.
        design_bytes = 8 * (n_columns + 1) ** 2
        self.summary = {
            "n_frames": len(fit_frames),
            "n_energies": n_energy,
            "n_force_components": n_force,
            "n_virial_components": n_virial,
            "n_sparse": {
                self.terms[s.term].describe_kind(s.kind): s.size for s in self.sparse_sets
            },
            "n_sparse_total": n_columns,
            "full_design_matrix_bytes": 8 * (n_obs + n_columns) * (n_columns + 1),
            "solver_bytes": design_bytes,
            "estimated_peak_bytes": design_bytes + self.block_memory,
            "sparse_jitter": {
                self.terms[s.term].describe_kind(s.kind): s.jitter for s in self.sparse_sets
            },
            "e0": dict(self.e0),
        }
        self._report()

        # Pass 2: stream frames in blocks; each block's noise-scaled rows [K_NM/sigma, y/sigma]
        # are folded into the R factor at once, so the design matrix is never held whole.
        solver = sparse_gp.StreamingQR(n_columns)
        for s in self.sparse_sets:
            solver.R[s.offset : s.offset + s.size, s.columns] = s.factor.T
        # Each frame holds its gradients and, twice, its rows (1 + 3 n_atoms + 6) x (M + 1).
        n_atoms = np.array([len(atoms) for atoms in fit_frames], dtype=np.float64)
        row_bytes = 16.0 * (7 + 3 * n_atoms) * (n_columns + 1)
        blocks = _frame_blocks(gradient_bytes + row_bytes, self.block_memory)
        model_parts = (self.terms, self.sparse_sets, n_columns)
        for rows in _map_blocks(
            client,
            _block_factor,
            model_parts,
            [([fit_frames[k] for k in b], [targets[k] for k in b]) for b in blocks],
            [len(b) for b in blocks],
            desc="design rows",
            verbose=self.verbose,
        ):
            solver.add_rows(rows)
        self.alpha, self.R = solver.solve()
        del solver
        clock.lap("design_rows_and_qr")
        self.summary["fit_seconds"] = time.perf_counter() - start
        self.summary["phase_seconds"] = clock.wall
        self.summary["phase_cpu_seconds"] = clock.cpu
        return self.summary

    def _report(self) -> None:
        s = self.summary
        lines = [
            f"gapx fit: {s['n_frames']} frames, {s['n_energies']} energies, "
            f"{s['n_force_components']} force components, {s['n_virial_components']} virial "
            "components",
            "sparse points: "
            + ", ".join(f"{name} {n}" for name, n in s["n_sparse"].items())
            + f" (total {s['n_sparse_total']})",
            f"memory: R factor {s['solver_bytes'] / 1e9:.3f} GB (the "
            f"{s['full_design_matrix_bytes'] / 1e9:.3f} GB design matrix is streamed in blocks), "
            f"estimated peak {s['estimated_peak_bytes'] / 1e9:.3f} GB",
        ]
        for line in lines:
            logger.info(line)
            if self.verbose:
                print(line)

    # ------------------------------------------------------------------------------------
    # Prediction
    # ------------------------------------------------------------------------------------

    @property
    def species(self) -> list[str]:
        return sorted(self.e0 or {}, key=lambda s: atomic_numbers[s])

    def _check_fitted(self) -> None:
        if self.alpha is None:
            raise ValueError("the model is not fitted: call fit(frames) or gapx.load(path)")

    def predict(self, atoms, std: bool = True) -> dict:
        """Energy, forces, stress, per-atom energies and their predictive standard deviations.

        Returns
        -------
        dict
            ``energy`` (eV), ``forces`` (n_atoms, 3) eV/Å, ``stress`` (6,) eV/Å^3 (Voigt, ASE sign,
            only for a 3-d cell), ``energies`` (n_atoms,) local energies (e0 included),
            ``energy_std`` and ``energies_std`` (n_atoms,) projected-process standard deviations
            of the total and local energies (only with ``std=True``); with a baseline also
            ``energy_longrange``, ``energy_shortrange`` (and ``charges`` if it reports them).
        """
        self._check_fitted()
        numbers = np.asarray(atoms.numbers)
        unknown = sorted({chemical_symbols[z] for z in numbers} - set(self.e0))
        if unknown:
            raise ValueError(f"species {unknown} are not in the model (trained on {self.species})")
        check_no_overlap(atoms)
        n_atoms = len(atoms)
        e0 = np.array([self.e0[chemical_symbols[z]] for z in numbers])
        energies = e0.copy()
        dE_dr = np.zeros((n_atoms, 3))
        dE_deps = np.zeros((3, 3))
        k_atoms = np.zeros((n_atoms, self.alpha.size)) if std else None
        prior_atoms = np.zeros(n_atoms)
        prior_total = 0.0
        for t, term in enumerate(self.terms):
            sets = [s for s in self.sparse_sets if s.term == t]
            rows = term.rows(atoms, gradients=False)
            local = np.zeros(rows.n_rows)
            dE_dX = np.zeros_like(rows.X)
            owners = scipy.sparse.csr_matrix(
                (rows.owner_weights, (rows.owner_atoms, rows.owner_rows)),
                shape=(n_atoms, rows.n_rows),
            )
            for s in sets:
                selected = np.nonzero(rows.kinds == s.kind)[0]
                if selected.size == 0:
                    continue
                X = rows.X[selected]
                a = self.alpha[s.columns]
                d2 = s.delta**2
                k, grad = term.kernel.value_and_gradient(X, s.points, a)
                k *= d2
                local[selected] = k @ a
                dE_dX[selected] = d2 * grad
                if std:
                    k_atoms[:, s.columns] = owners[:, selected] @ k
                    pa, pt = self._prior(term.kernel, X, owners[:, selected], d2)
                    prior_atoms += pa
                    prior_total += pt
            energies += owners @ local
            if rows.n_rows:
                dr, deps = term.backpropagate(atoms, rows, dE_dX)
                dE_dr += dr
                dE_deps += deps
        out = {"energies": energies, "energy": float(energies.sum()), "forces": -dE_dr}
        periodic = atoms.cell.rank == 3
        if periodic:
            out["stress"] = full_3x3_to_voigt_6_stress(dE_deps) / atoms.get_volume()
        if std:
            functionals = np.vstack([k_atoms, k_atoms.sum(axis=0)[None, :]])
            prior = np.concatenate([prior_atoms, [prior_total]])
            var = sparse_gp.functional_variance(prior, functionals, self.sparse_sets, self.R)
            out["energies_std"] = np.sqrt(var[:n_atoms])
            out["energy_std"] = float(np.sqrt(var[n_atoms]))
        if self.baseline is not None:
            base = self.baseline.calculate(atoms)
            out["energy_shortrange"] = out["energy"]
            out["energy_longrange"] = float(base["energy"])
            out["energy"] += float(base["energy"])
            out["energies"] = out["energies"] + np.asarray(base["energies"])
            out["forces"] = out["forces"] + np.asarray(base["forces"])
            if periodic:
                out["stress"] = out["stress"] + np.asarray(base["stress"]).reshape(-1)[:6]
            if "charges" in base:
                out["charges"] = np.asarray(base["charges"])
        return out

    @staticmethod
    def _prior(kernel, X, owners, d2, block: int = 2048) -> tuple[np.ndarray, float]:
        """Prior variances of per-atom local energies and of their sum, for one sparse kind.

        ``owners`` (n_atoms, n_rows) maps row local energies to atoms; cross-covariances between
        rows are included, computed in blocks of rows so memory stays O(block * n_rows).
        """
        n_rows = X.shape[0]
        owners = owners.tocsr()
        identity = (
            owners.shape[0] >= n_rows
            and owners.nnz == n_rows
            and np.all(owners.data == 1.0)
            and np.all(np.diff(owners.indptr) <= 1)
        )
        total = 0.0
        per_atom = np.zeros(owners.shape[0])
        ownersT = owners.T.tocsr()
        if identity:
            per_atom = owners @ (d2 * kernel.diag(X))
        for b0 in range(0, n_rows, block):
            Kb = d2 * kernel(X[b0 : b0 + block], X)
            weight = np.asarray(ownersT[b0 : b0 + block].sum(axis=1)).reshape(-1)
            total += float(weight @ Kb @ np.asarray(ownersT.sum(axis=1)).reshape(-1))
            if not identity:
                KW = (owners @ Kb.T).T  # (block, n_atoms)
                per_atom += np.asarray(ownersT[b0 : b0 + block].multiply(KW).sum(axis=0)).reshape(
                    -1
                )
        return per_atom, total

    # ------------------------------------------------------------------------------------
    # Model file
    # ------------------------------------------------------------------------------------

    def to_header(self) -> dict:
        from . import __version__

        return {
            "gapx_version": __version__,
            "hyperparameters": {
                "sigma_energy": self.sigma_energy,
                "sigma_force": self.sigma_force,
                "sigma_virial": self.sigma_virial,
                "config_type_sigma": {k: list(v) for k, v in self.config_type_sigma.items()},
                "e0_method": self.e0_method,
                "sparse_jitter": self.sparse_jitter,
                "seed": self.seed,
                **self.keys,
            },
            "species": self.species,
            "e0": self.e0,
            "terms": [t.to_dict() for t in self.terms],
            "baseline": None
            if self.baseline is None
            else {"type": "ewald", "params": self.baseline.to_dict()},
            "sparse_sets": [
                {
                    "term": s.term,
                    "kind": s.kind,
                    "offset": s.offset,
                    "size": s.size,
                    "delta": s.delta,
                    "jitter": s.jitter,
                }
                for s in self.sparse_sets
            ],
            "training": _jsonable(self.summary),
        }

    def save(self, path) -> None:
        """Write the fitted model to one versioned file (see :mod:`gapx.io`)."""
        self._check_fitted()
        arrays = {"alpha": self.alpha, "R": self.R}
        for n, s in enumerate(self.sparse_sets):
            arrays[f"sparse_{n}_points"] = s.points
            arrays[f"sparse_{n}_factor"] = s.factor
        write_model_file(os.fspath(path), self.to_header(), arrays)

    @classmethod
    def _from_file(cls, header: dict, arrays: dict, where: str = "model file") -> GAP:
        try:
            hyper = dict(header["hyperparameters"])
            terms = [_term_from_dict(t) for t in header["terms"]]
            baseline = None
            if header.get("baseline") is not None:
                baseline = _baseline_from_dict(header["baseline"])
            e0_method = hyper.pop("e0_method")
            model = cls(terms, e0=e0_method, baseline=baseline, verbose=False, **hyper)
            model.e0 = {str(k): float(v) for k, v in header["e0"].items()}
            model.summary = dict(header.get("training", {}))
            alpha, R = arrays["alpha"], arrays["R"]
            n_columns = alpha.shape[0] if alpha.ndim == 1 else -1
            if n_columns < 0 or R.shape != (n_columns, n_columns):
                raise ValueError(f"alpha {alpha.shape} and R {R.shape} do not match")
            for n, meta in enumerate(header["sparse_sets"]):
                points = arrays[f"sparse_{n}_points"]
                factor = arrays[f"sparse_{n}_factor"]
                size, offset, t = int(meta["size"]), int(meta["offset"]), int(meta["term"])
                if not 0 <= t < len(terms):
                    raise ValueError(f"sparse set {n} refers to term {t}")
                if points.ndim != 2 or points.shape[0] != size or factor.shape != (size, size):
                    raise ValueError(f"sparse set {n} arrays have inconsistent shapes")
                if offset < 0 or offset + size > n_columns:
                    raise ValueError(f"sparse set {n} columns out of range")
                model.sparse_sets.append(
                    SparseSet(
                        t,
                        int(meta["kind"]),
                        points,
                        offset,
                        float(meta["delta"]),
                        float(meta["jitter"]),
                        factor,
                    )
                )
            if sum(s.size for s in model.sparse_sets) != n_columns:
                raise ValueError("sparse sets do not cover the weights")
            model.alpha, model.R = alpha, R
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{where}: malformed model header ({error!r})") from None
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        return model


class _PhaseClock:
    """Wall and process-CPU seconds of consecutive fit phases (CPU time says how much of the
    machine a phase got when others share it)."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._wall = time.perf_counter()
        self._cpu = time.process_time()

    def lap(self, name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.wall[name] = wall - self._wall
        self.cpu[name] = cpu - self._cpu
        self._wall, self._cpu = wall, cpu


def _frame_blocks(frame_bytes, block_memory: float) -> list[list[int]]:
    """Consecutive blocks of frame indices, each holding at most ``block_memory`` bytes (or
    one frame when a single frame is larger)."""
    blocks: list[list[int]] = [[]]
    held = 0.0
    for k, size in enumerate(frame_bytes):
        if blocks[-1] and held + size > block_memory:
            blocks.append([])
            held = 0.0
        blocks[-1].append(k)
        held += size
    return blocks if blocks[0] else []


def _gradient_bytes(frames, terms) -> np.ndarray:
    """Bytes of each frame's descriptor gradients: one entry per atom and neighbour within the
    largest cutoff, plus the strain part, for all terms' features."""
    cutoff = max(term.cutoff for term in terms)
    n_features = sum(term.n_features for term in terms)
    n_atoms = np.array([len(atoms) for atoms in frames], dtype=np.float64)
    n_pairs = np.array(
        [len(neighbor_list(atoms, cutoff)[0]) if len(atoms) > 1 else 0 for atoms in frames],
        dtype=np.float64,
    )
    return 8.0 * n_features * (3 * (n_atoms + n_pairs) + 9 * n_atoms)


def _map_blocks(client, fn, shared, block_args, block_sizes, desc, verbose):
    """Yield ``fn(shared, *args)`` for each block, in block order, with a progress bar.

    Without a client the blocks run here one after the other (one block in memory at a time).
    With a ``dask.distributed.Client`` the shared state is sent to the workers once and the
    blocks run there; results are consumed in submission order so folding them stays
    deterministic, while workers keep computing later blocks. At most two blocks per worker
    are in flight, so finished (M+1)^2 factors never pile up faster than they are folded.
    """
    progress = tqdm(
        total=sum(block_sizes), desc=desc, disable=not verbose, leave=False, unit="frame"
    )
    if client is None:
        for args, size in zip(block_args, block_sizes, strict=True):
            yield fn(shared, *args)
            progress.update(size)
    else:
        [shared_future] = client.scatter([shared], broadcast=True, hash=False)
        window = 2 * max(1, len(client.scheduler_info()["workers"]))
        blocks = iter(zip(block_args, block_sizes, strict=True))
        in_flight = collections.deque()

        def submit_next() -> None:
            for args, size in itertools.islice(blocks, 1):
                in_flight.append((client.submit(fn, shared_future, *args, pure=False), size))

        for _ in range(window):
            submit_next()
        while in_flight:
            future, size = in_flight.popleft()
            result = future.result()
            future.release()
            submit_next()
            yield result
            progress.update(size)
    progress.close()


def _descriptor_values(terms, frames) -> list[dict[int, np.ndarray]]:
    """Descriptor rows of ``frames`` per term, grouped by kind."""
    out = [dict() for _ in terms]
    for t, term in enumerate(terms):
        grouped: dict[int, list] = {}
        for atoms in frames:
            rows = term.rows(atoms, gradients=False)
            for kind in np.unique(rows.kinds):
                grouped.setdefault(int(kind), []).append(rows.X[rows.kinds == kind])
        out[t] = {kind: np.concatenate(parts) for kind, parts in grouped.items()}
    return out


def _scaled_rows(model_parts, frames, targets) -> np.ndarray:
    """Noise-scaled design rows ``[K_NM / sigma | y / sigma]`` (n_obs, M + 1) of a block."""
    terms, sparse_sets, n_columns = model_parts
    n_atoms = [len(atoms) for atoms in frames]
    layout = sparse_gp.block_layout(
        n_atoms,
        [t[0] is not None for t in targets],
        [t[1] is not None for t in targets],
        [t[2] is not None for t in targets],
    )
    stacked, frame_of_rows = [], []
    for term in terms:
        rows, frame_of_row = sparse_gp.stack_rows(
            [term.rows(atoms, gradients=True) for atoms in frames], n_atoms
        )
        stacked.append(rows)
        frame_of_rows.append(frame_of_row)
    # Fortran order: LAPACK folds the block into R without another copy.
    augmented = np.zeros((layout.n_obs, n_columns + 1), order="F")
    sparse_gp.assemble_block(
        stacked,
        frame_of_rows,
        [term.kernel for term in terms],
        sparse_sets,
        layout,
        n_columns,
        out=augmented[:, :n_columns],
    )
    y = np.zeros(layout.n_obs)
    sigma = np.ones(layout.n_obs)
    for f, (energy, forces, virial, (se, sf, sv)) in enumerate(targets):
        if energy is not None:
            y[layout.energy_row[f]] = energy
            sigma[layout.energy_row[f]] = se
        if forces is not None:
            r0 = layout.force_row[f]
            y[r0 : r0 + 3 * n_atoms[f]] = forces.reshape(-1)
            sigma[r0 : r0 + 3 * n_atoms[f]] = sf
        if virial is not None:
            r0 = layout.virial_row[f]
            y[r0 : r0 + 6] = virial
            sigma[r0 : r0 + 6] = sv
    augmented[:, n_columns] = y
    augmented /= sigma[:, None]
    return augmented


def _block_factor(model_parts, frames, targets) -> np.ndarray:
    """A block's scaled rows, or, when taller than wide, their R factor (same R^T R).

    Folding R instead of the rows gives the same normal matrix and solution, and keeps what a
    worker sends back to at most (M+1)^2 numbers.
    """
    rows = _scaled_rows(model_parts, frames, targets)
    n_columns = model_parts[2]
    if rows.shape[0] <= n_columns + 1:
        return rows
    partial = sparse_gp.StreamingQR(n_columns)
    partial.add_rows(rows)
    return partial.R


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def load(path) -> GAP:
    """Load a model file written by :meth:`GAP.save` (alias of :func:`gapx.io.load`)."""
    from .io import load as _load

    return _load(path)


__all__ = ["GAP", "load", "FORMAT_VERSION"]
