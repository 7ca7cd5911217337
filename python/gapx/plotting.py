"""Plots a person would rather look at than read (matplotlib is imported only here)."""

from __future__ import annotations

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
    fig.savefig(path, dpi=120)
    plt.close(fig)
