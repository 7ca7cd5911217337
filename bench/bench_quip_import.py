"""Imported QUIP models: energy + forces of a gap_fit 2b + SOAP Si model read by
``gapx.from_quip``, gapx vs quippy on the same XML, and the import time of a large model.

1. gap_fit (quippy-ase) fits distance_2b (cutoff 5, 20 uniform sparse points) + SOAP (cutoff 5,
   n_max 8, l_max 6, atom_sigma 0.5, zeta 4, ``--n-sparse`` CUR points, default 500) to
   Lennard-Jones-labelled rattled diamond Si (the labels do not change the cost). The XML is
   loaded by ``gapx.from_quip`` and by ``quippy.potential.Potential``; both predict energy and
   forces of a 1000-atom cell (forces compared, then timed in this process with the same
   ``OMP_NUM_THREADS``). Prints the time per call and the ratio quippy / gapx.
2. The same XML with its SOAP block enlarged to ``--n-large`` sparse points (default 10 000:
   descriptors of a rattled Si crystal, random weights, a valid sparseX file and md5 sum):
   time of ``gapx.from_quip`` (parse, read, build the model) and of quippy's ``Potential``.

``--smoke``: 20 SOAP sparse points, a 64-atom cell, a 200-point large model (seconds).
"""

from __future__ import annotations

import argparse
import hashlib
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import xml.etree.ElementTree as ElementTree  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine_info, time_call, write_json  # noqa: E402
from bench_predict import gap_fit_binary, quip_energy_and_forces, training_frames  # noqa: E402

SOAP = "soap cutoff=5.0 n_max=8 l_max=6 atom_sigma=0.5 zeta=4 delta=1.0 covariance_type=dot_product"
TWO_BODY = "distance_2b cutoff=5.0 delta=0.5 theta_uniform=1.0 covariance_type=ard_se n_sparse=20"


def fit_quip(frames, n_sparse: int, folder: Path) -> Path:
    import ase.io

    ase.io.write(folder / "train.xyz", frames)
    gap = f"{TWO_BODY} sparse_method=uniform : {SOAP} n_sparse={n_sparse} sparse_method=cur_points"
    command = [
        gap_fit_binary(),
        "at_file=train.xyz",
        f"gap={{{gap}}}",
        "default_sigma={0.001 0.03 0.05 0}",
        "e0_method=average",
        "energy_parameter_name=energy",
        "force_parameter_name=forces",
        "sparse_jitter=1e-8",
        "gp_file=si.xml",
    ]
    with open(folder / "gap_fit.log", "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    return folder / "si.xml"


def enlarge_soap_block(xml: Path, n_points: int, out: Path) -> Path:
    """``xml`` with its SOAP block's sparse points replaced by ``n_points`` new ones."""
    from ase.build import bulk

    import gapx

    tree = ElementTree.parse(xml)
    block = next(c for c in tree.iter("gpCoordinates") if "soap" in c.find("descriptor").text)
    soap = gapx.SOAP(
        species=["Si"], cutoff=5.0, n_max=8, l_max=6, atom_sigma=0.5, radial_basis="quip"
    )
    repeat = int(np.ceil((n_points / 8) ** (1 / 3)))
    crystal = bulk("Si", "diamond", a=5.43, cubic=True).repeat(repeat)
    crystal.rattle(0.2, seed=2)
    X = soap.compute(crystal)[:n_points]
    points = np.zeros((n_points, soap.n_features + 1))
    points[:, :-1] = X[:, soap.quip_order]
    name = f"{out.name}.sparseX.large"
    data = "".join(f"{v:.20e}\n" for v in points.ravel()).encode()
    (out.parent / name).write_bytes(data)
    for element in block.findall("sparseX"):
        block.remove(element)
    alpha = np.random.default_rng(0).normal(size=n_points)
    for i, a in enumerate(alpha, 1):
        ElementTree.SubElement(block, "sparseX", i=str(i), alpha=repr(float(a)), sparseCutoff="1.0")
    block.set("n_sparseX", str(n_points))
    block.set("sparseX_filename", name)
    block.set("sparseX_md5sum", hashlib.md5(data).hexdigest())
    folder = xml.parent
    for c in tree.iter("gpCoordinates"):  # the 2b blocks' files, beside the new XML
        if c is not block and c.get("sparseX_filename"):
            source = folder / c.get("sparseX_filename")
            (out.parent / source.name).write_bytes(source.read_bytes())
    ElementTree.indent(tree)  # quippy's XML reader fails on very long lines
    tree.write(out)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-sparse", type=int, default=500)
    parser.add_argument("--n-large", type=int, default=10_000)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--min-time", type=float, default=3.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if gap_fit_binary() is None:
        print("quippy-ase (gap_fit) not installed: nothing to compare")
        return {}

    from ase.build import bulk
    from quippy.potential import Potential

    import gapx

    smoke = args.smoke
    n_sparse, n_large = (20, 200) if smoke else (args.n_sparse, args.n_large)
    min_time = 0.01 if smoke else args.min_time
    frames = training_frames(max(2, -(-n_sparse // 64)), 2 if not smoke else 1)
    cell = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2 if smoke else 5)
    cell.rattle(0.05, seed=1)
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    results = {"n_atoms": len(cell), "n_sparse_soap": n_sparse, "omp_num_threads": threads}
    with tempfile.TemporaryDirectory(prefix="gapx_bench_quip_") as name:
        folder = Path(name)
        xml = fit_quip(frames, n_sparse, folder)
        model = gapx.from_quip(xml)
        quip_call = quip_energy_and_forces(xml, cell)

        difference = np.abs(model.predict(cell, std=False)["forces"] - quip_call()).max()
        gapx_mean, gapx_std, _ = time_call(lambda: model.predict(cell, std=False), min_time)
        quip_mean, quip_std, _ = time_call(quip_call, min_time)
        results["predict"] = {
            "gapx_seconds": gapx_mean,
            "gapx_std": gapx_std,
            "quip_seconds": quip_mean,
            "quip_std": quip_std,
            "speedup_vs_quip": quip_mean / gapx_mean,
            "max_force_difference": float(difference),
        }
        print(f"{len(cell)} Si atoms, 2b + SOAP n8 l6 with {n_sparse} SOAP sparse points")
        print(f"  gapx   {gapx_mean * 1e3:9.1f} ms  (+- {gapx_std * 1e3:.1f})")
        print(f"  quippy {quip_mean * 1e3:9.1f} ms  (+- {quip_std * 1e3:.1f})")
        print(f"  quippy / gapx = {quip_mean / gapx_mean:.1f}x, max |dF| = {difference:.1e} eV/Å")

        large = enlarge_soap_block(xml, n_large, folder / "large.xml")
        start = time.perf_counter()
        gapx.from_quip(large)
        gapx_import = time.perf_counter() - start
        start = time.perf_counter()
        Potential(param_filename=str(large))
        quip_import = time.perf_counter() - start
        results["import"] = {
            "n_sparse": n_large,
            "gapx_seconds": gapx_import,
            "quip_seconds": quip_import,
        }
        print(
            f"import of a {n_large}-sparse-point model: gapx.from_quip {gapx_import:.2f} s, "
            f"quippy Potential {quip_import:.2f} s"
        )
    results["machine"] = machine_info(("quippy-ase",))
    results["smoke"] = smoke
    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
