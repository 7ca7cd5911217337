"""Sparse points of a QUIP GAP block: read from a ``sparseX`` file or inline, and written.

gap_fit writes each block's sparse points either into a text file beside the XML (one number
per line, point after point; named by the ``sparseX_filename`` attribute and checked by its
``sparseX_md5sum``) or as the text of each ``<sparseX>`` element. Both are untrusted input: the
file must be a plain name in the XML's folder, its size is bounded by what the block declares
before it is read, and any disagreement is a ValueError naming the file and element.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from ..io import atomic_write

# The longest number gap_fit writes ("-1.23456789012345678901e+00" plus a newline) is 28 bytes;
# a file may be this much larger per value before it is refused unread.
MAX_BYTES_PER_VALUE = 64


def _numbers(text: bytes | str, expected: int, where: str) -> np.ndarray:
    data = text.encode() if isinstance(text, str) else text
    # Fortran may write a double with a D exponent.
    fields = data.replace(b"D", b"E").replace(b"d", b"e").split()
    if len(fields) != expected:
        raise ValueError(f"{where}: expected {expected} numbers, found {len(fields)}")
    try:
        values = np.array(fields).astype(np.float64) if fields else np.zeros(0)
    except ValueError as error:
        raise ValueError(f"{where}: not a number ({error})") from None
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{where}: sparse points contain NaN or infinite values")
    return values


def read_sparse_file(folder: str, name: str, shape: tuple[int, int], md5: str | None, where: str):
    """The (n_sparse, dimensions) points in the file ``name`` of ``folder`` (the XML's)."""
    if os.path.basename(name) != name or name in ("", ".", ".."):
        raise ValueError(
            f"{where}: sparseX_filename {name!r} must be a file name in the model's folder"
        )
    path = os.path.join(folder, name)
    where = f"{where} (sparseX file {path!r})"
    if not os.path.isfile(path):
        raise ValueError(f"{where}: the file is missing")
    expected = shape[0] * shape[1]
    size = os.path.getsize(path)
    if size > MAX_BYTES_PER_VALUE * max(expected, 1):
        raise ValueError(f"{where}: {size} bytes is too large for {expected} numbers")
    with open(path, "rb") as handle:
        data = handle.read()
    if md5 and hashlib.md5(data).hexdigest() != md5.strip().lower():
        raise ValueError(
            f"{where}: the md5 sum does not match sparseX_md5sum (truncated or altered)"
        )
    return _numbers(data, expected, where).reshape(shape)


def read_inline(elements, dimensions: int, where: str) -> np.ndarray:
    """Points from the text of each ``<sparseX>`` element (one point per element)."""
    rows = [
        _numbers(e.text or "", dimensions, f"{where}, <sparseX i={e.get('i')!r}>") for e in elements
    ]
    return np.array(rows).reshape(len(rows), dimensions)


def write_sparse_file(path: str, points: np.ndarray) -> str:
    """Write ``points`` as gap_fit does (one number per line, ``%.20e``); returns the md5 sum."""
    text = "".join(f"{value:.20e}\n" for value in np.asarray(points, dtype=np.float64).ravel())
    data = text.encode()
    with atomic_write(path) as handle:
        handle.write(data)
    return hashlib.md5(data).hexdigest()
