"""Reading the pickles other few-shot codebases ship (MetaOptNet, learn2learn, CIFAR batches):
Python 2 pickles with ``encoding="latin1"``, bytes keys as ``str``; only numpy arrays, dtypes,
scalars and builtin containers may be built (any other global is refused, not executed).
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from .base import DataError

__all__ = ["load_pickle", "require_keys", "sniff_html", "decode_text"]

_ALLOWED_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "_reconstruct"),
                    ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
                    ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode"), ("collections", "OrderedDict"),
                    ("collections", "defaultdict")}
_BUILTINS = ("set", "frozenset", "bytearray", "list", "dict", "int", "float", "str", "tuple",
             "complex", "object")
# "__builtin__" is the Python 2 name, remapped by the unpickler's fix_imports
_ALLOWED_GLOBALS |= {(m, n) for m in ("builtins", "__builtin__") for n in _BUILTINS}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS or (module.startswith("numpy") and name.startswith("dtype")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}' (only numpy arrays and builtin "
                                     "containers are allowed in dataset pickles)")


def sniff_html(head: bytes) -> bool:
    """True when ``head`` (the first bytes of a file) looks like an HTML page."""
    text = head.lstrip()[:256].lower()
    return text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml", b"<body"))


def decode_text(value: Any) -> Any:
    """bytes -> str (latin1); other values unchanged."""
    return value.decode("latin1") if isinstance(value, bytes) else value


def _normalise(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {decode_text(k): v for k, v in obj.items()}
    return obj


def _fail(path: str, what: str, fix: str) -> DataError:
    return DataError(f"{path}: {what}; {fix}")


def load_pickle(source: str | Path | IO[bytes] | bytes, name: str | None = None) -> Any:
    """Load a dataset pickle (Python 2 or 3) from a path, a binary file or bytes, safely; a dict
    gets its bytes keys decoded. ``name`` labels error messages (default: the path)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        with open(path, "rb") as f:  # streamed: the file is never held twice in memory
            return _load_stream(f, name or str(path), path.stat().st_size)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return _load_stream(io.BytesIO(data), name or "<bytes>", len(data))
    return _load_stream(source, name or getattr(source, "name", "<stream>"), None)


def _load_stream(f: IO[bytes], label: str, size: int | None) -> Any:
    redownload = "download it again (and check its size against the source)"
    start = f.tell()
    head = f.read(512)
    if not head:
        raise _fail(label, "the file is empty", redownload)
    if sniff_html(head):
        raise _fail(label, "this is an HTML page, not a pickle (what a failed Google Drive or Dropbox download "
                    "saves: a quota or 'virus scan' page)",
                    "download the real file again in a browser or with a tool that follows the "
                    "confirmation page, then replace this one")
    f.seek(start)
    try:
        obj = _RestrictedUnpickler(f, encoding="latin1").load()
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError, MemoryError, OverflowError) as exc:
        msg = str(exc)
        if isinstance(exc, EOFError) or "truncated" in msg or "EOF" in msg:
            got = f"{size:,} bytes; " if size is not None else ""
            raise _fail(label, f"the pickle is truncated ({got}an interrupted download?)", redownload) from None
        if "refusing to load" in msg:
            raise _fail(label, msg, "use the original dataset file") from None
        raise _fail(label, f"not a readable pickle ({type(exc).__name__}: {msg})", redownload) from None
    return _normalise(obj)


def require_keys(obj: Any, keys: Iterable[str], label: str, fix: str = "") -> dict:
    """``obj`` if it is a dict with all ``keys``, else a :class:`DataError` naming the missing ones."""
    keys = list(keys)
    if not isinstance(obj, dict):
        raise DataError(f"{label}: expected a dict with keys {keys}, found a {type(obj).__name__}"
                        + (f"; {fix}" if fix else ""))
    missing = [k for k in keys if k not in obj]
    if missing:
        found = sorted(str(k) for k in obj)
        raise DataError(f"{label}: missing key(s) {missing}; found keys {found}"
                        + (f"; {fix}" if fix else "; is this the right file for this dataset?"))
    return obj
