"""Molecular dynamics with ASE on a model's calculator: the driver with progress and a log."""

from __future__ import annotations

import contextlib
import math
import os
import time

import numpy as np
from ase import units
from ase.constraints import FixCom
from ase.io.trajectory import Trajectory
from ase.md import velocitydistribution
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet
from tqdm.auto import tqdm

ENSEMBLES = ("nve", "langevin")


def thermalize(atoms, temperature: float, rng) -> None:
    """Maxwell-Boltzmann momenta at ``temperature`` K (ASE >= 3.29 renamed the function)."""
    if hasattr(velocitydistribution, "thermalize_momenta"):
        velocitydistribution.thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    else:  # pragma: no cover - older ASE
        velocitydistribution.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)


def start_velocities(atoms, temperature: float, rng) -> None:
    """Maxwell-Boltzmann momenta at ``temperature`` K without centre-of-mass motion (nor, for a
    non-periodic system, rotation)."""
    thermalize(atoms, temperature, rng)
    Stationary(atoms)
    if not any(atoms.pbc):
        ZeroRotation(atoms)


def langevin(atoms, timestep: float, temperature: float, friction: float, rng) -> Langevin:
    """Langevin dynamics of ``atoms`` (modified in place: a FixCom constraint is set).

    ``timestep`` in fs, ``temperature`` in K, ``friction`` in 1/fs; ``rng`` (a NumPy Generator)
    draws the random forces, so its state and the atoms' positions and momenta determine the
    trajectory.
    """
    # ASE deprecates Langevin(fixcm=True); a FixCom constraint on our copy does the same.
    atoms.set_constraint(FixCom())
    return Langevin(
        atoms,
        timestep=timestep * units.fs,
        temperature_K=temperature,
        friction=friction / units.fs,
        fixcm=False,
        rng=rng,
    )


def _open_outputs(trajectory: str | None, log: str | None, atoms):
    """The trajectory and the log, opened together: when one cannot be opened, the other is
    closed and removed again, so a failed start leaves no empty output behind."""
    opened = []
    try:
        traj = Trajectory(trajectory, "w", atoms) if trajectory else None
        if traj is not None:
            opened.append((traj, trajectory))
        log_handle = open(log, "w") if log else None  # noqa: SIM115 - closed by run_md
        return traj, log_handle
    except BaseException:
        for handle, path in opened:
            handle.close()
            with contextlib.suppress(OSError):
                os.remove(path)
        raise


def run_md(
    atoms,
    calc,
    *,
    steps: int,
    temperature: float,
    timestep: float,
    ensemble: str = "nve",
    friction: float = 0.01,
    seed: int = 0,
    trajectory: str | None = None,
    trajectory_interval: int = 10,
    log: str | None = None,
    log_interval: int = 1,
    progress: bool = True,
    init_velocities: bool = True,
) -> dict:
    """Run MD with ASE on a copy of ``atoms``; return a summary dict.

    ``temperature`` in K sets the initial Maxwell-Boltzmann velocities (and the Langevin bath),
    ``timestep`` is in fs, ``friction`` in 1/fs. The log has one line per ``log_interval`` steps:
    time (ps), total, potential and kinetic energy (eV), temperature (K), energy std (eV) and
    the largest force-component std (eV/Å) — nan on steps where the calculator computed no std.

    The trajectory and log are opened only once the first evaluation has succeeded, and together
    (:func:`_open_outputs`): a run that cannot start leaves no output behind. A run that fails
    part-way keeps what it wrote up to the failure, which shows how it failed.
    """
    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    if init_velocities:
        start_velocities(atoms, temperature, rng)
    if ensemble == "nve":
        dyn = VelocityVerlet(atoms, timestep=timestep * units.fs)
    elif ensemble == "langevin":
        dyn = langevin(atoms, timestep, temperature, friction, rng)
    else:
        raise ValueError(f"unknown ensemble {ensemble!r}; valid: {', '.join(ENSEMBLES)}")

    n_atoms = len(atoms)
    record = {
        "time": [],
        "etot": [],
        "epot": [],
        "ekin": [],
        "temperature": [],
        "energy_std": [],
        "max_force_std": [],
    }
    # The first evaluation (cached for the first step) fails here, not in an opened output,
    # when the model cannot describe the structure.
    atoms.get_forces()
    traj, log_handle = _open_outputs(trajectory, log, atoms)

    def observe():
        epot = atoms.get_potential_energy()
        ekin = atoms.get_kinetic_energy()
        # The calculator computes stds on some steps only (GAPCalculator std_every): nan else.
        std = calc.results.get("energy_std", math.nan)
        forces_std = calc.results.get("forces_std")
        f_std = math.nan if forces_std is None else float(np.max(forces_std))
        t_ps = dyn.get_time() / (1000 * units.fs)
        temp = atoms.get_temperature()
        values = (t_ps, epot + ekin, epot, ekin, temp, std, f_std)
        for key, value in zip(record, values, strict=True):
            record[key].append(float(value))
        if log_handle and dyn.nsteps % log_interval == 0:
            log_handle.write(
                f"{t_ps:10.5f} {epot + ekin:16.8f} {epot:16.8f} {ekin:12.6f} {temp:9.2f} "
                f"{std:11.6f} {f_std:11.6f}\n"
            )

    bar = tqdm(total=steps, desc=f"md ({ensemble})", unit="step", disable=not progress)
    start = time.perf_counter()
    try:
        if log_handle:
            log_handle.write(
                "# time[ps] Etot[eV] Epot[eV] Ekin[eV] T[K] E_std[eV] max_F_std[eV/A]  "
                f"({ensemble}, {n_atoms} atoms, dt {timestep} fs)\n"
            )
        dyn.attach(observe, interval=1)
        if traj is not None:
            dyn.attach(traj.write, interval=trajectory_interval)
        dyn.attach(lambda: bar.update(1) if dyn.nsteps > 0 else None, interval=1)
        dyn.run(steps)
    finally:
        elapsed = time.perf_counter() - start
        bar.close()
        if log_handle:
            log_handle.close()
        if traj is not None:
            traj.close()
    etot = np.asarray(record["etot"])
    f_stds = np.asarray(record["max_force_std"])
    max_f_std = (
        float(np.max(f_stds[np.isfinite(f_stds)])) if np.isfinite(f_stds).any() else math.nan
    )
    return {
        "steps": steps,
        "n_atoms": n_atoms,
        "ensemble": ensemble,
        "time_ps": steps * timestep / 1000.0,
        "drift_per_atom": float((etot[-1] - etot[0]) / n_atoms),
        "max_deviation_per_atom": float(np.max(np.abs(etot - etot[0])) / n_atoms),
        "mean_temperature": float(np.mean(record["temperature"][1:] or record["temperature"])),
        "max_force_std": max_f_std,
        "steps_per_second": steps / elapsed if elapsed > 0 else float("inf"),
        "record": record,
        "atoms": atoms,
    }


def format_md_summary(summary: dict) -> str:
    lines = [
        f"MD summary ({summary['ensemble']}, {summary['n_atoms']} atoms): "
        f"{summary['steps']} steps, {summary['time_ps']:.4f} ps simulated",
        f"  total energy drift: {summary['drift_per_atom']:+.3e} eV/atom "
        f"(max deviation {summary['max_deviation_per_atom']:.3e} eV/atom)",
        f"  mean temperature: {summary['mean_temperature']:.1f} K; "
        f"largest force std: {summary['max_force_std']:.4f} eV/Å",
        f"  speed: {summary['steps_per_second']:.1f} steps/s",
    ]
    return "\n".join(lines)
