"""Copy small rMD17 ethanol subsets (CC0) into tests/data for the GP tests and smoke benchmarks.

Run from the repository root: ``python tests/data/make_rmd17_subsets.py ../shared/data/rmd17``.
Takes the first 50 frames of rmd17_ethanol_train_01 and the first 20 of rmd17_ethanol_test_01,
unchanged (extxyz text lines copied verbatim).
"""

from __future__ import annotations

import sys
from pathlib import Path


def copy_frames(source: Path, target: Path, n_frames: int) -> None:
    lines = source.read_text().splitlines(keepends=True)
    out, position = [], 0
    for _ in range(n_frames):
        n_atoms = int(lines[position])
        out.extend(lines[position : position + n_atoms + 2])
        position += n_atoms + 2
    target.write_text("".join(out))


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    here = Path(__file__).parent
    copy_frames(folder / "rmd17_ethanol_train_01.extxyz", here / "ethanol_train_50.extxyz", 50)
    copy_frames(folder / "rmd17_ethanol_test_01.extxyz", here / "ethanol_test_20.extxyz", 20)
