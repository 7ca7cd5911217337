"""The model-file container, and atomic writes of every file gapx writes.

A model file is one zip archive written by ``numpy.savez`` holding plain numeric arrays and a JSON
header stored as a ``uint8`` array named ``__header__``. The header carries the format version,
the gapx version, the model hyperparameters, species, e0, the terms' and the baseline's
``to_dict()``, a training summary, and a manifest (name, shape, dtype) of every array. Reading
uses ``np.load(..., allow_pickle=False)`` and checks everything against the manifest; nothing is
ever unpickled or executed. What the header says about a model is :mod:`gapx.serialization`'s.

:func:`atomic_write` is how gapx writes files: into a temporary file in the target's folder,
flushed and fsynced, then renamed onto the target, so the target is either its old content or the
complete new one, whatever happens during the write.
"""

from __future__ import annotations

import contextlib
import json
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
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened."""
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
        missing/unparseable header, a newer format version, or arrays missing or with shapes and
        dtypes different from the manifest.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path}")
    where = f"model file {path!r}"
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{where} is corrupted or truncated: not a readable zip archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if HEADER not in names:
                raise ValueError(f"{where} has no gapx header: not a gapx model file")
            raw = archive[HEADER]
            header = _parse_header(raw, where)
            arrays = {name: archive[name] for name in names if name != HEADER}
    except ValueError as error:
        message = str(error)
        if "pickle" in message:
            raise ValueError(
                f"{where} contains an object array that would need pickle; refusing to load it"
            ) from None
        if message.startswith(where):
            raise
        raise ValueError(f"{where} is corrupted or truncated: {message}") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as error:
        raise ValueError(f"{where} is corrupted or truncated: {error}") from None
    _check_manifest(header, arrays, where)
    return header, arrays


def _parse_header(raw: np.ndarray, where: str) -> dict:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"{where}: header is not a byte string")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
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


def _check_manifest(header: dict, arrays: dict, where: str) -> None:
    manifest = header["arrays"]
    missing = sorted(set(manifest) - set(arrays))
    if missing:
        raise ValueError(f"{where} is missing arrays {missing}")
    extra = sorted(set(arrays) - set(manifest))
    if extra:
        raise ValueError(f"{where} has arrays not in its manifest: {extra}")
    for name, spec in manifest.items():
        array = arrays[name]
        try:
            shape = tuple(int(s) for s in spec["shape"])
            dtype = np.dtype(spec["dtype"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where}: bad manifest entry for {name!r}") from None
        if array.shape != shape or array.dtype != dtype:
            raise ValueError(
                f"{where}: array {name!r} has shape {array.shape} dtype {array.dtype}, "
                f"expected {shape} {dtype}"
            )
