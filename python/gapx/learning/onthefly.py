"""On-the-fly active learning: Langevin MD on a model, the oracle called where it is unsure.

Each ``std_interval`` steps the model's predicted force std is computed at the current
structure; when its maximum exceeds the threshold (and at least ``min_interval`` steps passed
since the last call, and fewer than ``max_calls`` calls were made), the oracle labels that
structure, the frame is added to the model by an incremental update
(:class:`gapx.learning.IncrementalFit`) and MD continues from the same positions and momenta
with the updated model. e0 stays at its value in the first fit.

Nothing is lost (:mod:`gapx.learning.run_files`): each call is fsync'ed to ``calls.extxyz``
before it is used, the model and the fit are replaced atomically after each update, and the MD
state (positions, momenta, step, the thermostat's random generator) is checkpointed before each
call, after each update and every ``checkpoint_interval`` steps. A resumed run restarts from
the last checkpoint; a call that completed after it is taken from the journal instead of asking
the oracle again, so the resumed run makes exactly the calls, updates and trajectory the
uninterrupted run would have made.
"""

from __future__ import annotations

import json
import logging
import math
import os

import numpy as np
from ase import Atoms
from tqdm.auto import tqdm

from ..calculator import GAPCalculator
from ..md import langevin, start_velocities
from ..serialization import model_header
from ..validation import positive_integer, positive_number
from .errors import LearningError, OracleError
from .incremental import IncrementalFit
from .oracle import label, make_calculator
from .run_files import RunFolder

logger = logging.getLogger("gapx")

#: Settings that determine the trajectory: a resumed run must use the values it started with.
DYNAMICS_SETTINGS = (
    "threshold",
    "temperature",
    "timestep",
    "friction",
    "std_interval",
    "min_interval",
    "seed",
    "new_sparse_per_frame",
    "sparse_tolerance",
    "max_temperature",
    "max_std",
)


def max_force_std(prediction: dict) -> float:
    """The largest predicted force-component std (eV/Å) of ``model.predict(atoms, std=True)``."""
    return float(np.max(prediction["forces_std"]))


def _header_settings(model) -> dict:
    """The model's settings as its file records them (JSON types, as run.json holds them)."""
    header = model_header(model)
    return json.loads(json.dumps({k: header[k] for k in ("hyperparameters", "terms", "baseline")}))


class OnTheFly:
    """Active learning during Langevin MD with any ASE calculator as the oracle.

    Parameters
    ----------
    model : gapx.GAP
        The model's settings (its fitted state, if any, is not used: the first model is
        fitted to ``frames``, or to the start structure labelled by the oracle).
    oracle : ASE calculator class or factory, "module:callable", or a calculator
        Gives the reference labels: a class or factory is called for a fresh calculator at
        each call (a calculator instance is used as it is).
    directory : str or os.PathLike
        Where the run keeps its files (:mod:`gapx.learning.run_files`).
    threshold : float
        Max force std (eV/Å) above which the oracle is called (see :func:`max_force_std`).
    temperature, timestep, friction : float
        Langevin MD: K, fs, 1/fs.
    std_interval : int
        Compute the std every this many steps (it costs more than the mean).
    min_interval : int
        Least number of steps between two calls.
    max_calls : int or None
        Most oracle calls in all (the start's labelling included).
    seed : int
        Seeds the start velocities and the thermostat.
    frames : list of ase.Atoms, optional
        Labelled frames for the first model, instead of labelling the start.
    max_temperature : float, optional
        MD blow-up limit (K); default 5 T + 1000 K.
    max_std : float, optional
        Blow-up limit of the max force std when no call can be made; default 100 threshold.
    retries : int
        Ask the oracle again this many times when it raises or returns non-finite values.
    checkpoint_interval : int
        Steps between MD checkpoints (besides those at every call).
    new_sparse_per_frame, sparse_tolerance, descriptor_memory
        Of the incremental update (:class:`IncrementalFit`).
    progress : bool
        Show a progress bar (steps, calls, current max std).
    """

    def __init__(
        self,
        model,
        oracle,
        directory,
        *,
        threshold: float,
        temperature: float,
        timestep: float = 1.0,
        friction: float = 0.01,
        std_interval: int = 1,
        min_interval: int = 1,
        max_calls: int | None = None,
        seed: int = 0,
        frames=None,
        max_temperature: float | None = None,
        max_std: float | None = None,
        retries: int = 0,
        checkpoint_interval: int = 100,
        new_sparse_per_frame: int = 4,
        sparse_tolerance: float = 1e-6,
        descriptor_memory: float = 1e9,
        progress: bool = False,
    ):
        self.model = model
        self.oracle = oracle
        self.directory = os.fspath(directory)
        self.threshold = positive_number("threshold", threshold)
        self.temperature = positive_number("temperature", temperature)
        self.timestep = positive_number("timestep", timestep)
        self.friction = positive_number("friction", friction)
        self.std_interval = positive_integer("std_interval", std_interval)
        self.min_interval = positive_integer("min_interval", min_interval)
        self.max_calls = None if max_calls is None else positive_integer("max_calls", max_calls)
        self.seed = positive_integer("seed", seed, minimum=0)
        self.frames = None if frames is None else list(frames)
        self.max_temperature = positive_number(
            "max_temperature",
            5 * self.temperature + 1000.0 if max_temperature is None else max_temperature,
        )
        self.max_std = positive_number(
            "max_std", 100 * self.threshold if max_std is None else max_std
        )
        self.retries = positive_integer("retries", retries, minimum=0)
        self.checkpoint_interval = positive_integer("checkpoint_interval", checkpoint_interval)
        self.fit_options = {
            "new_sparse_per_frame": new_sparse_per_frame,
            "sparse_tolerance": sparse_tolerance,
            "descriptor_memory": descriptor_memory,
        }
        IncrementalFit(model, **self.fit_options)  # validates the options
        self.new_sparse_per_frame = new_sparse_per_frame
        self.sparse_tolerance = sparse_tolerance
        self.progress = bool(progress)

    def _settings(self) -> dict:
        return {
            **{name: getattr(self, name) for name in DYNAMICS_SETTINGS},
            "oracle": self.oracle if isinstance(self.oracle, str) else repr(self.oracle),
            "model": _header_settings(self.model),
        }

    def _check_settings(self, saved: dict) -> None:
        differ = [
            f"{name} {getattr(self, name)!r} (the run used {saved.get(name)!r})"
            for name in DYNAMICS_SETTINGS
            if saved.get(name) != getattr(self, name)
        ]
        if saved.get("model") != _header_settings(self.model):
            differ.append("the model settings (terms, noise, e0, ...)")
        if differ:
            raise ValueError(
                f"cannot resume {self.directory} with different settings: " + "; ".join(differ)
            )

    def _oracle_label(self, atoms) -> Atoms:
        # A fresh calculator per call (from a class or factory), so that each label depends on
        # its structure alone and not on what the calculator computed before: a resumed run
        # then gets the labels the uninterrupted run got (EMT's neighbour list, a DFT code's
        # restart files would otherwise carry history over).
        return label(make_calculator(self.oracle), atoms, retries=self.retries)

    def run(self, atoms, steps: int, resume: bool = False) -> dict:
        """Run until MD step ``steps`` (counted from the start of the run, so a resumed run
        continues to the same total); returns a summary. ``atoms`` is the start structure
        (with ``resume``, the one the run started from). ``self.model`` is updated in place.

        Raises LearningError (one line) when the oracle fails or the MD blows up; the folder
        then holds the model and every call so far, and ``resume=True`` continues."""
        steps = positive_integer("steps", steps, minimum=0)
        try:  # refuse an oracle that cannot make a calculator before anything is written
            make_calculator(self.oracle)
        except OracleError as error:
            raise ValueError(str(error)) from None
        folder = RunFolder(self.directory)
        if resume:
            if not folder.exists():
                raise ValueError(f"nothing to resume in {self.directory}: it holds no run")
            self._check_settings(folder.read_json(folder.settings))
        else:
            folder.create()
            folder.write_json(folder.settings, self._settings())
            if self.frames is not None:
                folder.write_frames(folder.train, self.frames)
        folder.remove_temporaries()
        initial = folder.read_frames(folder.train)
        calls = folder.read_calls()
        state = folder.read_json(folder.state) if os.path.isfile(folder.state) else None
        if state is None:
            learner, state, calls = self._first_model(folder, atoms, initial, calls)
        else:
            learner = self._restore(folder, atoms, initial, calls, state)
        self.model._adopt(learner.state())
        folder.start_log(state["step"] if resume else None, state["phase"] != "step")
        try:
            return self._loop(folder, learner, state, initial, calls, steps)
        finally:
            folder.close_log()
            self._plot(folder)

    def _first_model(self, folder, atoms, initial, calls):
        """Fit the first model (to the initial frames, or to the labelled start) and make the
        MD state at step 0."""
        n_calls = 0
        if not initial:
            if calls:  # a run killed during its first fit: the start was labelled already
                frame = calls[0]
                if not np.allclose(frame.positions, atoms.positions, atol=1e-6):
                    raise ValueError("the start structure differs from the run's first call")
            else:
                frame = self._oracle_label(atoms)
                frame.info.update({"learn_call": 0, "learn_step": 0})
                frame = folder.append_call(frame)
                calls = [frame]
            initial_frames, n_calls = [frame], 1
        else:
            initial_frames = initial
        learner = IncrementalFit.fit(self.model, initial_frames, **self.fit_options)
        self.model._adopt(learner.state())
        folder.write_model(self.model)
        folder.write_learner(learner)
        md_atoms = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        rng = np.random.default_rng(self.seed)
        start_velocities(md_atoms, self.temperature, rng)
        state = {
            "step": 0,
            "phase": "check",
            "n_calls": n_calls,
            "last_call": 0 if n_calls else None,
        }
        state.update(_md_arrays(md_atoms, rng))
        folder.write_json(folder.state, state)
        return learner, state, calls

    def _restore(self, folder, atoms, initial, calls, state) -> IncrementalFit:
        """The fit of the last checkpoint; a call made after it stays in the journal and is
        replayed when the run reaches it."""
        arrays = folder.read_learner()
        n_given = IncrementalFit.frames_in(arrays)
        data = initial + calls
        learner = IncrementalFit.from_arrays(self.model, data[:n_given], arrays)
        n_calls, pending = state["n_calls"], len(calls) - state["n_calls"]
        if len(state["numbers"]) != len(atoms) or list(state["numbers"]) != list(atoms.numbers):
            raise ValueError("the start structure is not the one this run started from")
        if pending < 0 or pending > (state["phase"] == "call"):
            raise LearningError(
                f"{folder.calls} holds {len(calls)} calls but the checkpoint expects {n_calls}: "
                "the run folder is inconsistent"
            )
        if n_given not in (len(initial) + n_calls, len(initial) + n_calls + pending):
            raise LearningError(f"{folder.learner} does not match the checkpoint")
        return learner

    def _loop(self, folder, learner, state, initial, calls, steps) -> dict:
        run = _Run(folder, learner, initial, calls, state, *self._dynamics(state))
        bar = tqdm(
            total=steps, initial=min(run.step, steps), desc="learn", unit="step",
            disable=not self.progress,
        )  # fmt: skip
        try:
            while True:
                if run.phase == "check":
                    self._check(run)
                elif run.phase == "call":
                    self._call(run)
                elif run.step >= steps:
                    break
                else:
                    self._step(run.dyn, run.step)
                    run.step += 1
                    run.phase = "check"
                    bar.update(1)
                    bar.set_postfix(calls=run.n_calls, std=f"{run.last_std:.3g}", refresh=False)
                    if run.step % self.checkpoint_interval == 0:
                        run.checkpoint()
            run.checkpoint()
        finally:
            bar.close()
        return {
            "steps": run.step,
            "n_calls": run.n_calls,
            "calls_this_run": run.made,
            "last_max_force_std": run.last_std,
            "n_sparse": self.model.summary.get("n_sparse", {}),
            "directory": self.directory,
        }

    def _check(self, run: _Run) -> None:
        """At a std step: the std, the blow-up limits, and whether to call the oracle."""
        run.phase = "step"
        if run.step % self.std_interval:
            return
        prediction = self._predict(run.atoms, run.step)
        run.last_std = max_force_std(prediction)
        temperature = run.atoms.get_temperature()
        allowed = (run.last_call is None or run.step - run.last_call >= self.min_interval) and (
            self.max_calls is None or run.n_calls < self.max_calls
        )
        call = allowed and run.last_std > self.threshold
        self._check_blowup(run.step, temperature, run.last_std, call)
        if call:
            run.phase = "call"
            run.checkpoint()
        else:
            run.folder.log_row(
                step=run.step,
                time_ps=run.step * self.timestep / 1000.0,
                temperature_K=temperature,
                max_force_std=run.last_std,
                oracle_called=0,
            )

    def _call(self, run: _Run) -> None:
        """Label the current structure (or take the label an interrupted run journaled), add it
        to the model, and checkpoint."""
        if len(run.calls) > run.n_calls:  # made before an interruption: replay it
            frame = run.calls[run.n_calls]
            if not np.allclose(frame.positions, run.atoms.positions, atol=1e-6):
                raise LearningError(
                    f"call {run.n_calls} in {run.folder.calls} is not at the structure of step "
                    f"{run.step}: the run folder is inconsistent"
                )
            # The model may hold the frame already: the std is the one the call was made at.
            run.last_std = float(frame.info["learn_max_force_std"])
        else:
            prediction = self._predict(run.atoms, run.step)
            run.last_std = max_force_std(prediction)
            frame = self._oracle_label(run.atoms)
            error = np.abs(frame.get_forces() - prediction["forces"])
            frame.info.update(
                {
                    "learn_call": run.n_calls,
                    "learn_step": run.step,
                    "learn_max_force_std": run.last_std,
                    "learn_max_force_error": float(error.max()),
                    "learn_force_rmse": float(np.sqrt(np.mean(error**2))),
                }
            )
            frame = run.folder.append_call(frame)
            run.calls.append(frame)
        if run.learner.n_frames < len(run.initial) + run.n_calls + 1:
            run.learner.add([frame])
            self.model._adopt(run.learner.state())
            run.folder.write_model(self.model)
            run.folder.write_learner(run.learner)
        run.atoms.calc.reset()
        run.n_calls, run.last_call, run.made = run.n_calls + 1, run.step, run.made + 1
        run.folder.log_row(
            step=run.step,
            time_ps=run.step * self.timestep / 1000.0,
            temperature_K=run.atoms.get_temperature(),
            max_force_std=run.last_std,
            oracle_called=1,
            max_force_error=float(frame.info["learn_max_force_error"]),
        )
        run.phase = "step"
        run.checkpoint()

    def _dynamics(self, state):
        md_atoms = Atoms(
            state["numbers"], positions=state["positions"], cell=state["cell"], pbc=state["pbc"]
        )
        # Momenta before the FixCom constraint exists, so nothing adjusts them.
        md_atoms.set_momenta(np.array(state["momenta"]))
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        dyn = langevin(md_atoms, self.timestep, self.temperature, self.friction, rng)
        md_atoms.calc = GAPCalculator(self.model, std=False)
        return md_atoms, dyn

    def _predict(self, md_atoms, step: int) -> dict:
        try:
            return self.model.predict(md_atoms, std=True)
        except ValueError as error:
            raise LearningError(f"MD blew up at step {step}: {error}") from None

    def _step(self, dyn, step: int) -> None:
        try:
            dyn.step()
        except ValueError as error:
            raise LearningError(f"MD blew up at step {step + 1}: {error}") from None
        atoms = dyn.atoms
        if not (np.all(np.isfinite(atoms.positions)) and np.all(np.isfinite(atoms.get_momenta()))):
            raise LearningError(f"MD blew up at step {step + 1}: non-finite positions or momenta")

    def _check_blowup(self, step: int, temperature: float, std: float, call: bool) -> None:
        if not temperature <= self.max_temperature:
            raise LearningError(
                f"MD blew up at step {step}: temperature {temperature:.0f} K is above the "
                f"safety limit {self.max_temperature:.0f} K"
            )
        if not call and not std <= self.max_std:
            raise LearningError(
                f"MD blew up at step {step}: max force std {std:.3g} eV/Å is above the safety "
                f"limit {self.max_std:.3g} eV/Å and no oracle call is allowed now"
            )

    def _plot(self, folder) -> None:
        from ..plotting import learning_plot

        try:
            calls = folder.read_calls()
            learning_plot(
                folder.read_log(),
                {
                    "step": [c.info.get("learn_step", 0) for c in calls],
                    "max_force_error": [c.info.get("learn_max_force_error", np.nan) for c in calls],
                },
                self.threshold,
                folder.plot,
            )
        except Exception as error:  # a plot must never hide why a run stopped
            logger.warning("could not write %s: %s", folder.plot, error)


class _Run:
    """The mutable state of a running loop; :meth:`checkpoint` writes it to ``state.json``.

    ``phase`` is what happens next at ``step``: "check" (compute the std, decide), "call"
    (label the structure) or "step" (advance the MD).
    """

    def __init__(self, folder, learner, initial, calls, state, atoms, dyn):
        self.folder, self.learner, self.initial, self.calls = folder, learner, initial, calls
        self.atoms, self.dyn = atoms, dyn
        self.step, self.phase = state["step"], state["phase"]
        self.n_calls, self.last_call = state["n_calls"], state["last_call"]
        self.made, self.last_std = 0, math.nan

    def checkpoint(self) -> None:
        self.folder.sync_log()
        data = {"step": self.step, "phase": self.phase, "n_calls": self.n_calls}
        data["last_call"] = self.last_call
        data.update(_md_arrays(self.atoms, self.dyn.rng))
        self.folder.write_json(self.folder.state, data)


def _md_arrays(atoms, rng) -> dict:
    """What a checkpoint stores of the MD: exact (JSON floats round-trip) and self-contained."""
    return {
        "numbers": atoms.numbers.tolist(),
        "positions": atoms.positions.tolist(),
        "momenta": atoms.get_momenta().tolist(),
        "cell": atoms.cell.array.tolist(),
        "pbc": atoms.pbc.tolist(),
        "rng": rng.bit_generator.state,
    }
