"""The IDX format of MNIST-style datasets (LeCun et al.): a 4-byte magic ``0 0 <type> <ndim>``,
``ndim`` big-endian ``int32`` sizes, then the values in C order, big-endian; raw or gzipped (told
apart by the gzip magic ``1f 8b``, not by the file name)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from .base import DataError

__all__ = ["IDX_TYPES", "parse_idx", "read_idx"]

#: IDX type byte -> big-endian numpy dtype
IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """The array stored in the IDX bytes ``data`` (native byte order); ``name`` labels errors."""
    fix = "download the file again"
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise DataError(f"{name}: not an IDX file (magic bytes {data[:4].hex(' ') or 'none'}, expected "
                        f"00 00 <type> <ndim>); {fix}")
    dtype, ndim = IDX_TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX file ({len(data)} bytes, its header alone needs {header}); {fix}")
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got != need:
        raise DataError(f"{name}: {'truncated' if got < need else 'oversized'} IDX file: its header "
                        f"{'x'.join(map(str, shape))} needs {need} bytes of values, found {got}; {fix}")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=dtype.itemsize > 1) if dtype.itemsize > 1 else arr


def read_idx(path: str | Path) -> np.ndarray:
    """The array of the IDX file ``path`` (raw or gzipped)."""
    path = Path(path)
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc}); download the file again") from None
    return parse_idx(data, str(path))
