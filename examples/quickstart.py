"""Quickstart: fit a GAP to rMD17 ethanol, print its test errors, then run a short MD.

Runs the three ``gapx`` commands in-process (``gapx.cli.main``), exactly as on the command line:

    gapx fit  examples/ethanol_train.xyz --config examples/ethanol.toml -o OUT/ethanol.gapx
    gapx eval OUT/ethanol.gapx examples/ethanol_test.xyz --json OUT/errors.json --plots OUT
    gapx md   OUT/ethanol.gapx examples/ethanol_test.xyz --steps 200 --temperature 300 \
              --timestep 0.5 --trajectory OUT/md.traj --log OUT/md.log

Outputs go to ``examples/output/`` (or ``--outdir``). ``--small`` (or the environment variable
``GAPX_QUICKSTART_SMALL=1``) runs a reduced version in well under a minute, as CI does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import ase.io

from gapx.cli import main as gapx

HERE = os.path.dirname(os.path.abspath(__file__))


def run(argv: list[str]) -> None:
    print(f"\n$ gapx {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    code = gapx(argv)
    if code != 0:
        sys.exit(f"quickstart: `gapx {argv[0]}` failed with exit code {code}")
    print(f"[{argv[0]} took {time.perf_counter() - start:.1f} s]", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--small",
        action="store_true",
        default=os.environ.get("GAPX_QUICKSTART_SMALL", "") not in ("", "0"),
        help="reduced run (fewer frames, sparse points and MD steps), as in CI",
    )
    parser.add_argument("--outdir", default=os.path.join(HERE, "output"))
    args = parser.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    out = args.outdir.rstrip("/")

    train = os.path.join(HERE, "ethanol_train.xyz")
    test = os.path.join(HERE, "ethanol_test.xyz")
    config = os.path.join(HERE, "ethanol.toml")
    model = os.path.join(out, "ethanol.gapx")
    overrides: list[str] = []
    steps = 200
    if args.small:
        # Fewer frames and sparse points: same pipeline, a fraction of the time.
        train_small = os.path.join(out, "ethanol_train_small.xyz")
        test_small = os.path.join(out, "ethanol_test_small.xyz")
        ase.io.write(train_small, ase.io.read(train, index=":40"), format="extxyz")
        ase.io.write(test_small, ase.io.read(test, index=":20"), format="extxyz")
        train, test = train_small, test_small
        overrides = ["--set", "soap.n_sparse=60", "--set", "soap.n_max=4", "--set", "soap.l_max=3"]
        steps = 40

    start = time.perf_counter()
    run(["fit", train, "--config", config, "-o", model, *overrides])
    run(["info", model])
    run(["eval", model, test, "--json", f"{out}/errors.json", "--plots", out, "--quiet"])
    md = ["md", model, test, "--steps", str(steps), "--temperature", "300", "--timestep", "0.5"]
    run([*md, "--trajectory", f"{out}/md.traj", "--log", f"{out}/md.log", "--quiet"])
    print(f"\nquickstart finished in {time.perf_counter() - start:.1f} s; outputs in {out}/")


if __name__ == "__main__":
    main()
