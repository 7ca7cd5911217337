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
