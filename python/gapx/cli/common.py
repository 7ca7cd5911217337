"""What every command shares: the user-error exception, exit codes, output-path checks, model
loading, threads."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile

from threadpoolctl import threadpool_limits

from ..io import atomic_write
from ..model import load
from ..quip.xml_reader import from_quip

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


class CLIError(Exception):
    """A user error: reported as one line on stderr, exit code 1, no traceback."""


def _check_writable_folder(folder: str, what: str) -> None:
    """Refuse ``folder`` unless a file can be created in it (tried: permissions, ACLs and
    read-only mounts all show)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise CLIError(f"{what}: cannot write into {folder} ({error.strerror})") from None


def check_output_file(path, flag: str) -> None:
    """Refuse an output file that cannot be written, before any work is done.

    ``path`` must not be a directory, its folder must exist and be writable, and an existing
    file there must be writable. ``flag`` names the option in the message (``-o``, ``--json``).
    """
    path = os.fspath(path)
    what = f"{flag} {path}"
    if os.path.isdir(path):
        raise CLIError(f"{what}: is a directory, not a file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(folder):
        raise CLIError(f"{what}: output folder does not exist: {folder}")
    if not os.path.isdir(folder):
        raise CLIError(f"{what}: {folder} is not a folder")
    _check_writable_folder(folder, what)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise CLIError(f"{what}: the existing file is not writable")


def check_output_dir(path, flag: str) -> None:
    """Refuse an output folder (``--plots``) that is a file or cannot be created or written."""
    path = os.fspath(path)
    what = f"{flag} {path}"
    if os.path.exists(path) and not os.path.isdir(path):
        raise CLIError(f"{what}: exists and is not a folder")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise CLIError(f"{what}: cannot create it inside {existing}, which is not a folder")
    _check_writable_folder(existing, what)


def is_quip_xml(path: str) -> bool:
    """Whether ``path`` names a QUIP/GAP XML model (by its extension) rather than a .gapx."""
    return os.fspath(path).lower().endswith(".xml")


def load_model(path: str):
    """A .gapx model file, or a QUIP/GAP XML model (``*.xml``) through gapx.from_quip."""
    if not os.path.isfile(path):
        raise CLIError(f"model file not found: {path}")
    try:
        return from_quip(path) if is_quip_xml(path) else load(path)
    except (ValueError, KeyError, OSError, NotImplementedError) as error:
        raise CLIError(f"cannot load model {path}: {error}") from None


# Below this many atoms per structure, threads cost more than they save: evaluation of small
# molecules is faster on one thread, and much faster when the cores are oversubscribed.
SMALL_SYSTEM = 100


def add_evaluation_options(parser) -> None:
    """``--threads`` and ``--quiet`` of the commands that evaluate a model."""
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help=f"OpenMP threads (default: 1 below {SMALL_SYSTEM} atoms per frame; BLAS uses 1)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def thread_limit(threads: int | None, n_atoms: int | None = None, single_blas: bool = False):
    """Context limiting OpenMP (and BLAS) threads with threadpoolctl for one command.

    ``threads`` None means automatic: one OpenMP thread for systems below ``SMALL_SYSTEM``
    atoms, otherwise the library default (``OMP_NUM_THREADS``). ``single_blas`` keeps BLAS on
    one thread: during evaluation its matrices are small, and BLAS threads only compete with
    the SOAP code's OpenMP threads (measured here: 1000-atom Si, 2 cores, 78 ms per step with
    one thread each, 60 ms with two OpenMP threads, 133 ms with two of each).
    """
    if threads is not None and threads < 1:
        raise CLIError(f"--threads must be at least 1, got {threads}")
    if threads is None and n_atoms is not None and n_atoms < SMALL_SYSTEM:
        threads = 1
    stack = contextlib.ExitStack()
    if single_blas:
        stack.enter_context(threadpool_limits(limits=1, user_api="blas"))
        if threads is not None:
            stack.enter_context(threadpool_limits(limits=threads, user_api="openmp"))
    elif threads is not None:
        stack.enter_context(threadpool_limits(limits=threads))
    return stack


def write_report(path: str, args, result: dict, what: str) -> None:
    """Write ``result`` with the command's model and data paths as JSON to ``path`` (atomically)
    and say so."""
    with atomic_write(path, "w") as handle:
        json.dump({"model": args.model, "data": args.data, **result}, handle, indent=2)
    print(f"{what} written to {path}")
