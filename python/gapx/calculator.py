"""ASE calculator for a fitted gapx model."""

from __future__ import annotations

import os
import threading

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from ._core import __version__
from .model import STD_MODES, load
from .quip.xml_reader import from_quip
from .validation import positive_integer

__all__ = ["GAPCalculator"]


class GAPCalculator(Calculator):
    """ASE calculator evaluating a fitted :class:`gapx.GAP` model.

    Parameters
    ----------
    model : gapx.GAP or str or os.PathLike
        A fitted model, or the path of a model file written by ``model.save`` (loaded with
        :func:`gapx.load`) or of a QUIP/GAP XML model (``*.xml``, :func:`gapx.from_quip`).
    std : bool or "energy"
        Also compute the predictive standard deviations ``energy_std``, ``energies_std``,
        ``forces_std`` and (3-d cells) ``stress_std`` (True), or the energies' only ("energy",
        much cheaper), at every evaluation. Off by default: the default calculator costs what
        ``model.predict(atoms, std=False)`` costs.
    std_every : int, optional
        Compute the standard deviations at every ``std_every``-th evaluation only (the first
        included), e.g. to monitor an MD run cheaply; the evaluations in between carry no std
        keys. With ``std`` False it means all of them (True).
    **kwargs
        Passed to :class:`ase.calculators.calculator.Calculator` (``label``, ``directory``,
        ``atoms``).

    Notes
    -----
    One call of ``model.predict`` computes everything, because energy, forces and stress share
    the descriptors and their gradients. ``results`` then holds ``energy`` (eV, float),
    ``free_energy`` (= energy), ``energies`` (n_atoms,) eV, ``forces`` (n_atoms, 3) eV/Å,
    ``stress`` (6,) eV/Å^3 in Voigt order xx, yy, zz, yz, xz, xy with ASE's sign (only for
    cells of rank 3) and, when computed, the predictive standard deviations ``energy_std`` (eV),
    ``energies_std`` (n_atoms,) eV, ``forces_std`` (n_atoms, 3) eV/Å and ``stress_std`` (6,)
    eV/Å^3. With an Ewald baseline the model's ``energy_longrange`` and ``energy_shortrange`` are
    passed through too.

    ASE's :meth:`~ase.calculators.calculator.Calculator.check_state` decides when to recompute:
    nothing is evaluated again unless positions, numbers, cell, pbc (or charges/magmoms) changed.
    Each evaluation then builds the neighbour list and descriptors afresh (``GAP.predict`` offers
    no incremental update for position-only changes; the C++ neighbour list is a small part of
    a step's cost).
    The user's ``Atoms`` is never modified: the model only ever sees the calculator's own copy.

    Threads: one calculator may be shared by several threads (each with its own ``Atoms``).
    ASE's calculator state (the atoms it last saw and their ``results``) is shared, and the
    model's C++ code releases the GIL, so :meth:`calculate`, :meth:`reset` and
    :meth:`get_property` (through which ``atoms.get_forces()`` and the like read results) hold a
    lock: each call returns the
    results of the structure it was given. Reading ``calc.results`` directly is not covered
    (another thread may replace it); use the getters. A fitted :class:`gapx.GAP` itself may be
    shared freely: ``predict`` changes nothing (while no thread fits or calibrates it), so
    threads, or one calculator per thread, can predict with it at once.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    # Extra keys copied from the model's prediction into ``results`` when present.
    extra_results = (
        "energy_std",
        "energies_std",
        "forces_std",
        "stress_std",
        "energy_longrange",
        "energy_shortrange",
    )

    def __init__(self, model, *, std: bool | str = False, std_every: int | None = None, **kwargs):
        if isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"model file not found: {path}")
            model_path = os.path.abspath(path)
            model = from_quip(path) if path.lower().endswith(".xml") else load(path)
        else:
            model_path = None
            if not callable(getattr(model, "predict", None)):
                raise TypeError(
                    "GAPCalculator needs a fitted gapx.GAP model or the path of a model file, "
                    f"got {type(model).__name__}"
                )
        self._lock = threading.RLock()
        super().__init__(**kwargs)
        self.model = model
        if std not in STD_MODES:
            raise ValueError(f"std must be one of {STD_MODES}, got {std!r}")
        if std_every is not None:
            std_every = positive_integer("std_every", std_every)
        self.std = std or (std_every is not None)
        self.std_every = std_every if std_every is not None else 1
        self.n_evaluations = 0
        # Model hyperparameters live on the model; parameters only say where it came from, so
        # todict() stays small and meaningful.
        self.parameters.update({"model_path": model_path, "version": __version__})

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_lock", None)  # locks do not pickle; a copy gets its own
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def get_property(self, name, atoms=None, allow_calculation=True):
        """ASE's :meth:`~ase.calculators.calculator.Calculator.get_property`, under the
        calculator's lock: the state check, the calculation and the read of ``results`` happen
        together, so a thread never reads another thread's results."""
        with self._lock:
            return super().get_property(name, atoms, allow_calculation)

    def reset(self):
        """Forget the last results (under the calculator's lock)."""
        with self._lock:
            super().reset()

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        """Evaluate the model once and fill ``self.results`` with every property.

        ``properties`` is ignored: all of them come from the same pass. ``self.atoms`` (a copy
        the base class made of the user's atoms) is what the model sees. Holds the
        calculator's lock (see the class notes on threads).
        """
        with self._lock:
            self._calculate(atoms, properties, system_changes)

    def _calculate(self, atoms, properties, system_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        std = self.std if self.n_evaluations % self.std_every == 0 else False
        self.n_evaluations += 1
        prediction = self.model.predict(atoms, std=std)
        n_atoms = len(atoms)
        energy = float(prediction["energy"])
        results = {
            "energy": energy,
            "free_energy": energy,
            "energies": np.asarray(prediction["energies"], dtype=np.float64).reshape(n_atoms),
            "forces": np.asarray(prediction["forces"], dtype=np.float64).reshape(n_atoms, 3),
        }
        if atoms.cell.rank == 3 and prediction.get("stress") is not None:
            results["stress"] = np.asarray(prediction["stress"], dtype=np.float64).reshape(6)
        for key in self.extra_results:
            value = prediction.get(key)
            if value is None:
                continue
            results[key] = float(value) if np.ndim(value) == 0 else np.asarray(value, float)
        self.results = results
