"""Plots a person would rather look at than read (matplotlib is imported only here)."""

from __future__ import annotations

import numpy as np

from .io import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str) -> None:
    """Write ``fig`` as PNG to ``path`` atomically, and close it."""
    try:
        with atomic_write(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=120)
    finally:
        plt.close(fig)


def parity_plot(parity: dict, path: str) -> None:
    """Write a PNG with reference-vs-predicted energies (per atom) and force components."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), constrained_layout=True)
    panels = [
        (axes[0], "energy", "energy (eV/atom)"),
        (axes[1], "forces", "force component (eV/Å)"),
    ]
    for ax, name, label in panels:
        if not parity[name]:
            ax.text(0.5, 0.5, f"no {name} labels", ha="center", va="center")
            ax.set_axis_off()
            continue
        if name == "energy":
            data = np.asarray(parity["energy"])
            types = np.asarray(parity["config_type"])
        else:
            data = np.concatenate(parity["forces"])
            types = np.concatenate([[t] * n for t, n in parity["force_config_type"]])
        for ctype in dict.fromkeys(types):
            mask = types == ctype
            ax.scatter(data[mask, 0], data[mask, 1], s=4, alpha=0.6, label=str(ctype))
        lo, hi = float(data.min()), float(data.max())
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"predicted {label}")
        rmse = float(np.sqrt(np.mean((data[:, 1] - data[:, 0]) ** 2)))
        unit = "meV/atom" if name == "energy" else "meV/Å"
        ax.set_title(f"{name}: RMSE {1000 * rmse:.2f} {unit}")
        if len(set(types)) > 1:
            ax.legend(markerscale=3, fontsize=8)
    _save(plt, fig, path)


def calibration_plot(errors: dict, stds: dict, calibration, path: str) -> None:
    """Write a PNG judging predicted stds against observed errors, before and after calibration.

    Left: observed vs expected coverage of central Gaussian intervals (the diagonal is perfect
    calibration) for energies per atom and force components; middle and right: |error| against
    predicted std (log-log, with the line |error| = std), predicted and calibrated. ``errors``
    and ``stds`` are as for :func:`gapx.uncertainty.fit_calibration` (the model's own stds),
    ``calibration`` a :class:`gapx.uncertainty.Calibration` (or None: only the predicted stds).
    """
    from .uncertainty import QUANTITIES, coverage_curve

    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.6), constrained_layout=True)
    levels = np.linspace(0.0, 1.0, 201)
    coverage = axes[0]
    coverage.plot([0, 1], [0, 1], "k:", lw=0.8, label="ideal")
    names = {"energy": ("energy", "meV/atom"), "forces": ("force component", "meV/Å")}
    colours = {"energy": "C0", "forces": "C3"}
    for quantity, ax in zip(QUANTITIES, axes[1:], strict=True):
        e = np.abs(np.asarray(errors.get(quantity, ()), dtype=float).ravel())
        s = np.asarray(stds.get(quantity, ()), dtype=float).ravel()
        name, unit = names[quantity]
        if e.size == 0:
            ax.text(0.5, 0.5, f"no {name} errors with stds", ha="center", va="center")
            ax.set_axis_off()
            continue
        versions = [("predicted", s, "0.6", "--")]
        if calibration is not None:
            versions.append(("calibrated", calibration.calibrated(quantity, s), None, "-"))
        shown = e > 0
        for label, std, colour, style in versions:
            coverage.plot(
                levels,
                coverage_curve(e, std, levels),
                style,
                color=colours[quantity],
                alpha=0.5 if colour else 1.0,
                label=f"{name}, {label}",
            )
            keep = shown & (std > 0)
            ax.scatter(
                1000 * std[keep],
                1000 * e[keep],
                s=4,
                alpha=0.5,
                color=colours[quantity] if colour is None else colour,
                label=label,
                rasterized=True,
            )
        values = 1000 * np.concatenate([e[shown], *[v[1][v[1] > 0] for v in versions]])
        if values.size:
            lo, hi = float(values.min()) / 1.5, float(values.max()) * 1.5
            ax.plot([lo, hi], [lo, hi], "k:", lw=0.8, label="|error| = std")
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"{name} std ({unit})")
        ax.set_ylabel(f"|{name} error| ({unit})")
        ax.set_title(f"{name}: {e.size} errors")
        ax.legend(markerscale=3, fontsize=8)
    coverage.set_xlim(0, 1)
    coverage.set_ylim(0, 1)
    coverage.set_aspect("equal")
    coverage.set_xlabel("expected coverage (confidence level)")
    coverage.set_ylabel("observed coverage")
    coverage.set_title("central-interval coverage")
    coverage.legend(fontsize=8)
    _save(plt, fig, path)


def learning_plot(log: dict, calls: dict, threshold: float, path: str) -> None:
    """Write a PNG of an on-the-fly learning run.

    Top: the max predicted force std at every checked step, the threshold, the steps where the
    oracle was called, and at those steps the actual max force error of the model before the
    update (eV/Å). Bottom: the MD temperature. ``log`` has arrays ``step``, ``max_force_std``,
    ``temperature_K``, ``oracle_called`` (the run's ``log.csv``); ``calls`` has ``step`` and
    ``max_force_error`` of each oracle call (NaN where there was no model yet).
    """
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 6), sharex=True, height_ratios=(2, 1), constrained_layout=True
    )
    steps = np.asarray(log["step"], dtype=float)
    std = np.asarray(log["max_force_std"], dtype=float)
    top.plot(steps, std, lw=0.9, color="C0", label="max predicted force std")
    top.axhline(threshold, color="k", ls="--", lw=0.8, label=f"threshold {threshold:g} eV/Å")
    call_steps = np.asarray(calls["step"], dtype=float)
    errors = np.asarray(calls["max_force_error"], dtype=float)
    for n, step in enumerate(call_steps):
        top.axvline(step, color="C3", lw=0.5, alpha=0.35, label="oracle call" if n == 0 else None)
    known = np.isfinite(errors)
    if known.any():
        top.scatter(
            call_steps[known], errors[known], color="C3", s=14, zorder=3,
            label="actual max force error at the call",
        )  # fmt: skip
    if np.any(std > 0) or known.any():
        top.set_yscale("log")
    top.set_ylabel("eV/Å")
    top.set_title(f"on-the-fly learning: {len(call_steps)} oracle calls")
    top.legend(fontsize=8, loc="upper right")
    bottom.plot(steps, np.asarray(log["temperature_K"], dtype=float), lw=0.8, color="C2")
    bottom.set_ylabel("temperature (K)")
    bottom.set_xlabel("MD step")
    _save(plt, fig, path)


def hyperparameter_plot(trials: list[dict], path: str) -> None:
    """Write a PNG of the CV force and energy MAE of every trial against each hyperparameter
    (``trials`` as in ``gapx tune``'s report)."""
    plt = _pyplot()
    names = list(trials[0]["params"]) if trials else []
    fig, axes = plt.subplots(
        1,
        max(1, len(names)),
        figsize=(3 * max(1, len(names)), 3.2),
        constrained_layout=True,
        squeeze=False,
    )
    for ax, name in zip(axes[0], names, strict=False):
        x = [float(t["params"][name]) for t in trials]
        for key, colour, label in (
            ("force_mae", "C3", "F (meV/Å)"),
            ("energy_mae", "C0", "E (meV/atom)"),
        ):
            y = [1000 * t[key] if t[key] is not None else np.nan for t in trials]
            ax.scatter(x, y, s=12, color=colour, label=label)
        ax.set_xlabel(name)
        ax.set_yscale("log")
    axes[0][0].set_ylabel("CV MAE")
    axes[0][0].legend(fontsize=7)
    _save(plt, fig, path)


def learning_curve_plot(curves: dict, path: str) -> None:
    """Write a PNG of the CV energy and force MAE (overall and per config_type) against the
    number of training frames and against n_sparse (``curves`` from gapx tune's report)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key in zip(axes, ("n_frames", "n_sparse"), strict=True):
        points = curves.get(key, [])
        if not points:
            ax.text(0.5, 0.5, f"no {key} curve (budget)", ha="center", va="center")
            ax.set_axis_off()
            continue
        x = [p[key] for p in points]
        for q, colour, label in (
            ("force_mae", "C3", "F (meV/Å)"),
            ("energy_mae", "C0", "E (meV/atom)"),
        ):
            ax.plot(x, [1000 * (p[q] or np.nan) for p in points], "o-", color=colour, label=label)
            types = sorted({t for p in points for t in p["per_config_type"]})
            if len(types) > 1:
                for t in types:
                    y = [1000 * (p["per_config_type"].get(t, {}).get(q) or np.nan) for p in points]
                    ax.plot(x, y, ":", color=colour, alpha=0.6, label=f"{label} {t}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training frames per fold" if key == "n_frames" else "n_sparse (SOAP)")
        ax.set_ylabel("CV MAE")
        ax.legend(fontsize=7)
    _save(plt, fig, path)
