"""The model-file container, and atomic writes of every file gapx writes.

A model file is one zip archive written by ``numpy.savez`` holding plain numeric arrays and a JSON
header stored as a ``uint8`` array named ``__header__``. The header carries the format version,
the gapx version, the model hyperparameters, species, e0, the terms' and the baseline's
``to_dict()``, a training summary, and a manifest (name, shape, dtype) of every array. What the
header says about a model is :mod:`gapx.serialization`'s. ``numpy.savez`` stores the members
uncompressed, which is what the C++ reader of the same files (``cpp/src/model_file.cpp``, used by
the prediction engine and LAMMPS) requires; this reader also accepts deflated members.

Reading never unpickles or executes anything, and never allocates or inflates more than the file
declares: the header's member may hold at most :data:`MAX_HEADER_BYTES` (16 MiB); every other
member's uncompressed size must be what its manifest shape and dtype need (plus its ``.npy``
header), its element count at most :data:`MAX_ARRAY_ELEMENTS`, and no member may inflate more
than :data:`MAX_COMPRESSION_RATIO` times its stored size; all of this is checked from the zip
directory before any array is read, and each array is then read, through a reader bounded by
its declared size, into a buffer of exactly that size.

:func:`atomic_write` is how gapx writes files: into a temporary file in the target's folder,
flushed and fsynced, then renamed onto the target, so the target is either its old content or the
complete new one, whatever happens during the write.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import stat
import zipfile

import numpy as np

FORMAT_NAME = "gapx-model"
# 2: terms and baselines are flat ``{"type": ..., **settings}`` dicts (1 nested them in "params").
# 3: the header holds the ``calibration`` of the model's stds (null when uncalibrated).
FORMAT_VERSION = 3
HEADER = "__header__"
_ALLOWED_KINDS = "biuf"

#: Largest JSON header a model file may have (bytes). Real headers are a few kB.
MAX_HEADER_BYTES = 16 * 2**20
#: Largest element count of one array: 2**34 (128 GiB of float64), far beyond any model that
#: fits in memory (the R factor of 131 072 sparse points).
MAX_ARRAY_ELEMENTS = 2**34
#: Bytes a member may hold beyond its array data: the ``.npy`` header (numpy writes 128).
NPY_HEADER_ALLOWANCE = 4096
#: Most a member above :data:`BOMB_MIN_BYTES` may inflate relative to its stored size. Model
#: arrays are floating-point numbers: numpy stores them uncompressed (ratio 1) and deflate gets
#: about 1.1 out of them (2 for a triangular R); only a zip bomb inflates 100-fold.
MAX_COMPRESSION_RATIO = 100
BOMB_MIN_BYTES = 2**20


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Open a file object that replaces ``path`` only if the ``with`` block completes.

    The data go to a temporary file in ``path``'s folder (``.<name>.<random>.tmp``), which is
    flushed, fsynced and then renamed onto ``path`` (``os.replace``, atomic on POSIX and
    Windows): a reader sees the old file or the new one, never a part. When the block raises
    (full disk, a file-size limit, any error), the temporary file is removed and ``path`` is
    untouched. A writer killed outright leaves at most the temporary file. ``mode`` is ``"wb"``
    or ``"w"`` (UTF-8 text). The new file gets the permissions of the file it replaces, or those
    ``open`` would give a new one.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    try:
        mode_bits = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode_bits = None
    while True:
        temporary = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
    kwargs = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
    try:
        with open(fd, mode, **kwargs) as handle:
            if mode_bits is not None:
                os.chmod(temporary, mode_bits)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    sync_folder(folder)


def sync_folder(folder) -> None:
    """fsync a folder, so that files created or renamed in it survive a crash (POSIX); a no-op
    where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_model_file(path, header: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write ``header`` (JSON-serialisable) and numeric ``arrays`` to ``path`` (exact name),
    atomically (:func:`atomic_write`)."""
    manifest = {}
    clean = {}
    for name, value in arrays.items():
        if name == HEADER:
            raise ValueError(f"array name {HEADER!r} is reserved")
        array = np.ascontiguousarray(value)
        if array.dtype.kind not in _ALLOWED_KINDS:
            raise ValueError(f"array {name!r} has dtype {array.dtype}: only numeric arrays allowed")
        manifest[name] = {"shape": list(array.shape), "dtype": array.dtype.str}
        clean[name] = array
    full = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **header}
    full["arrays"] = manifest
    text = json.dumps(full, sort_keys=True, allow_nan=False)
    clean[HEADER] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    # A file object keeps numpy from appending ".npz" to the name.
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **clean)


def read_model_file(path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and validate a model file; returns ``(header, arrays)``.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not a zip archive, truncated or corrupted (CRC) data, an array that would need pickle, a
        missing, oversized (> :data:`MAX_HEADER_BYTES`) or unparseable header, a newer format
        version, arrays missing or with shapes and dtypes different from the manifest, a member
        whose size is not what its manifest entry needs, one that would inflate more than
        :data:`MAX_COMPRESSION_RATIO` times, or an array of more than
        :data:`MAX_ARRAY_ELEMENTS` elements; each naming the member.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path}")
    where = f"model file {path!r}"
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{where} is corrupted or truncated: not a readable zip archive")
    try:
        with zipfile.ZipFile(path) as archive:
            members = _members(archive, where)
            if HEADER not in members:
                raise ValueError(f"{where} has no gapx header: not a gapx model file")
            for info in members.values():
                _check_ratio(info, where)
            info = members[HEADER]
            if info.file_size > MAX_HEADER_BYTES + NPY_HEADER_ALLOWANCE:
                _header_too_large(info, info.file_size, where)
            raw = _read_member(archive, info, None, where)
            if raw.size > MAX_HEADER_BYTES:
                _header_too_large(info, raw.size, where)
            header = _parse_header(raw, where)
            specs = _check_sizes(header, members, where)
            arrays = {
                name: _read_member(archive, members[name], spec, where)
                for name, spec in specs.items()
            }
    except ValueError as error:
        if str(error).startswith(where):
            raise
        raise ValueError(f"{where} is corrupted or truncated: {error}") from None
    except (
        zipfile.BadZipFile,
        EOFError,
        OSError,
        KeyError,
        NotImplementedError,
        RuntimeError,
    ) as e:
        raise ValueError(f"{where} is corrupted or truncated: {e}") from None
    return header, arrays


def _header_too_large(info: zipfile.ZipInfo, size: int, where: str):
    raise ValueError(
        f"{where}: member {info.filename!r} (the header) inflates to {size} bytes, more than "
        f"the {MAX_HEADER_BYTES} bytes a header may have"
    )


def _members(archive: zipfile.ZipFile, where: str) -> dict[str, zipfile.ZipInfo]:
    """The archive's members by array name (``alpha.npy`` is ``alpha``)."""
    members = {}
    for info in archive.infolist():
        name = info.filename
        if not name.endswith(".npy"):
            raise ValueError(f"{where}: member {name!r} is not a .npy array")
        name = name[: -len(".npy")]
        if name in members:
            raise ValueError(f"{where}: member {info.filename!r} appears twice")
        members[name] = info
    return members


def _check_ratio(info: zipfile.ZipInfo, where: str) -> None:
    if info.file_size > max(BOMB_MIN_BYTES, MAX_COMPRESSION_RATIO * info.compress_size):
        raise ValueError(
            f"{where}: member {info.filename!r} would inflate from {info.compress_size} to "
            f"{info.file_size} bytes, more than {MAX_COMPRESSION_RATIO} times: not model data"
        )


def _spec(name: str, spec, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a manifest entry, refusing non-numeric dtypes and absurd sizes."""
    try:
        shape = tuple(int(s) for s in spec["shape"])
        dtype = np.dtype(spec["dtype"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: bad manifest entry for {name!r}") from None
    if dtype.hasobject:
        raise ValueError(f"{where} declares an object array {name!r} that would need pickle")
    if dtype.kind not in _ALLOWED_KINDS or any(s < 0 for s in shape):
        raise ValueError(f"{where}: bad manifest entry for {name!r}: {spec!r}")
    count = math.prod(shape)
    if count > MAX_ARRAY_ELEMENTS:
        raise ValueError(
            f"{where}: array {name!r} declares {count} elements, more than the "
            f"{MAX_ARRAY_ELEMENTS} a model file may hold"
        )
    return shape, dtype


def _check_sizes(header: dict, members: dict, where: str) -> dict:
    """The manifest's ``{name: (shape, dtype)}`` once every member's uncompressed size (from
    the zip directory, nothing read) is what its entry needs."""
    manifest = header["arrays"]
    arrays = {name for name in members if name != HEADER}
    missing = sorted(set(manifest) - arrays)
    if missing:
        raise ValueError(f"{where} is missing arrays {missing}")
    extra = sorted(arrays - set(manifest))
    if extra:
        raise ValueError(f"{where} has arrays not in its manifest: {extra}")
    specs = {}
    total = 0
    for name, entry in manifest.items():
        shape, dtype = specs[name] = _spec(name, entry, where)
        need = math.prod(shape) * dtype.itemsize
        size = members[name].file_size
        if not need < size <= need + NPY_HEADER_ALLOWANCE:
            raise ValueError(
                f"{where}: member {members[name].filename!r} inflates to {size} bytes, but "
                f"its manifest entry (shape {shape}, dtype {dtype}) needs {need} bytes of data"
            )
        total += need
    memory = _physical_memory()
    if memory and total > memory:
        raise ValueError(
            f"{where} declares {total} bytes of arrays, more than this machine's {memory} bytes "
            "of memory"
        )
    return specs


def _physical_memory() -> int:
    """Bytes of physical memory, 0 when unknown."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return 0


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, spec, where: str) -> np.ndarray:
    """One ``.npy`` member, read through a reader bounded by the member's declared size into an
    array of exactly the declared shape (``spec``: manifest shape and dtype; None for the
    header, a 1-d uint8 array of any length)."""
    name = info.filename
    with archive.open(info) as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(handle, max_header_size=NPY_HEADER_ALLOWANCE)
        except (ValueError, SyntaxError, TypeError) as error:
            raise ValueError(
                f"{where}: member {name!r} is not a valid .npy array ({error})"
            ) from None
        if dtype.hasobject:
            raise ValueError(
                f"{where} contains an object array {name!r} that would need pickle; refusing "
                "to load it"
            )
        if spec is None:
            if dtype != np.uint8 or len(shape) != 1:
                raise ValueError(f"{where}: header is not a byte string")
            spec = (tuple(shape), dtype)
        if (tuple(shape), dtype) != spec:
            raise ValueError(
                f"{where}: array {name[:-4]!r} has shape {tuple(shape)} dtype {dtype}, "
                f"expected {spec[0]} {spec[1]}"
            )
        data_bytes = math.prod(shape) * dtype.itemsize
        if info.file_size != handle.tell() + data_bytes:
            raise ValueError(
                f"{where}: member {name!r} holds {info.file_size - handle.tell()} bytes of data, "
                f"its shape {tuple(shape)} and dtype {dtype} need {data_bytes}"
            )
        array = np.empty(shape[::-1] if fortran else shape, dtype=dtype)
        buffer = memoryview(array.reshape(-1).view(np.uint8))
        filled = 0
        while filled < data_bytes:
            count = handle.readinto(buffer[filled:])
            if not count:
                raise ValueError(f"{where}: member {name!r} ends early")
            filled += count
        if handle.read(1):  # also completes the CRC check
            raise ValueError(f"{where}: member {name!r} holds more than its shape needs")
    return array.T if fortran else array


def _parse_header(raw: np.ndarray, where: str) -> dict:
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"{where}: header is not valid JSON ({error})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise ValueError(f"{where}: header does not describe a {FORMAT_NAME} file")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{where}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{where} has format version {version}, newer than this gapx reads "
            f"({FORMAT_VERSION}); upgrade gapx (file written by gapx "
            f"{header.get('gapx_version', '?')})"
        )
    if not isinstance(header.get("arrays"), dict):
        raise ValueError(f"{where}: header has no array manifest")
    return header
