"""Reading a checkpoint without running code.

Every checkpoint is read with ``torch.load(..., weights_only=True)``: pickle may then only build
tensors, storages and plain containers (numbers, strings, lists, dicts, tuples, ``None``), so a
file that names a function or class (``os.system``, a class of some module) is refused before
anything in it runs. Checkpoints written by earlier versions hold NumPy arrays and scalars (the
NumPy random state); :data:`LEGACY_NUMPY` allows exactly the NumPy types that rebuild those and
nothing else, and :func:`to_plain` turns them into plain values right after loading.

What cannot be read this way is one line naming the file and the reason
(:class:`CheckpointRefusedError`, a ``ValueError``): a file naming anything else
(``<file>: refused to load: it contains 'posix.system', ...``), a TorchScript archive, a zip
archive that ``torch.save`` did not write, a file that is neither a zip archive nor a pickle.
There is no option that turns this off: a checkpoint written by fewshot-sla never needs it.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import importlib
import io
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

__all__ = ["CheckpointRefusedError", "LEGACY_NUMPY", "safe_torch_load", "to_plain", "pickle_globals"]

_SCAN_BYTES = 64 << 20  # the most of a refused file read again to name what it holds
_FIX = "use a best.pt or last.pt written by fewshot-sla (or its run directory)"


class CheckpointRefusedError(ValueError):
    """A file that cannot be read as a checkpoint without running code (one line naming it)."""


def _numpy_types() -> list[tuple[Any, str]]:
    """The NumPy functions and classes an earlier version's checkpoint names, under both module
    spellings (``numpy.core`` up to NumPy 1.x, ``numpy._core`` from 2.0)."""
    major = int(np.__version__.split(".")[0])
    multiarray = importlib.import_module("numpy._core.multiarray" if major >= 2 else "numpy.core.multiarray")
    out: list[tuple[Any, str]] = []
    for prefix in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out += [(multiarray._reconstruct, f"{prefix}._reconstruct"), (multiarray.scalar, f"{prefix}.scalar")]
    out += [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    # the dtype instances of numeric arrays (``type(np.dtype("u4"))`` is ``numpy.dtypes.UInt32DType``):
    # unpickling sets their state, which weights_only allows for allow-listed classes only
    for name in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                 "float16", "float32", "float64", "complex64", "complex128"):
        cls = type(np.dtype(name))
        out.append((cls, f"{cls.__module__}.{cls.__qualname__}"))
    return out


#: the only globals beyond torch's own weights_only set that a checkpoint may name: NumPy's
#: array, scalar and dtype reconstruction (numeric dtypes only), as earlier versions wrote them
LEGACY_NUMPY: list[tuple[Any, str]] = _numpy_types()


def _names(items: list[str]) -> str:
    quoted = [f"'{n}'" for n in items[:3]]
    more = f" and {len(items) - 3} more" if len(items) > 3 else ""
    return (", ".join(quoted[:-1]) + " and " + quoted[-1] if len(quoted) > 1 else quoted[0]) + more


def pickle_globals(data: bytes) -> list[str]:
    """The ``module.name`` of every global the pickle stream(s) in ``data`` name, in order, read
    statically (``pickletools``: nothing is built or imported). Reads consecutive pickles (torch's
    legacy format is several) until the bytes stop being one."""
    found: list[str] = []
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        start = stream.tell()
        try:
            found += _globals_of_one(stream)
        except Exception:  # noqa: BLE001 - raw storage bytes after the pickles, or a damaged stream
            break
        if stream.tell() == start:
            break
    return list(dict.fromkeys(found))


def _globals_of_one(stream: io.BytesIO) -> list[str]:
    found: list[str] = []
    strings: list[Any] = []  # the values pushed lately (strings, for STACK_GLOBAL), and the memo
    memo: dict[int, Any] = {}
    for op, arg, _ in pickletools.genops(stream):
        if op.name == "GLOBAL":
            found.append(str(arg).replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            mod, name = strings[-2:] if len(strings) >= 2 else (None, None)
            found.append(f"{mod}.{name}" if isinstance(mod, str) and isinstance(name, str) else "<unknown global>")
        if op.name in ("MEMOIZE",):
            memo[len(memo)] = strings[-1] if strings else None
        elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = strings[-1] if strings else None
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            strings.append(memo.get(int(arg)))
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
                         "SHORT_BINSTRING"):
            strings.append(arg)
        elif op.name not in ("FRAME", "PROTO"):
            strings.append(None)
    return found


def _harmless() -> set[str]:
    """Names torch's weights_only loading builds itself, plus :data:`LEGACY_NUMPY`'s."""
    names = {name for _, name in LEGACY_NUMPY}
    try:
        from torch import _weights_only_unpickler as wou

        names |= set(wou._get_allowed_globals())
    except (ImportError, AttributeError):  # another torch: the refusal then names every global
        pass
    return names


def _pickle_bytes(path: Path, head: bytes) -> bytes:
    """The pickle stream(s) of a torch file: a zip archive's ``data.pkl``, or the legacy format's
    leading pickles (:data:`_SCAN_BYTES` at most: the names come first)."""
    if head.startswith(b"PK"):
        with zipfile.ZipFile(path) as z:
            info = next((i for i in z.infolist() if i.filename.endswith("data.pkl")), None)
            return z.read(info) if info is not None and info.file_size <= _SCAN_BYTES else b""
    with open(path, "rb") as f:
        return f.read(_SCAN_BYTES)


def _refusal(path: Path, head: bytes, err: Exception) -> str:
    """Why weights_only loading refused ``path``: the globals it names that a checkpoint never holds."""
    msg = str(err)
    hit = re.search(r"GLOBAL (\S+) was not an allowed global", msg)
    try:
        names = [n for n in pickle_globals(_pickle_bytes(path, head)) if n not in _harmless()]
    except Exception:  # noqa: BLE001 - only the message depends on it
        names = []
    if hit and hit.group(1) not in names:
        names.insert(0, hit.group(1))
    if names:
        return (f"it contains {_names(names)}, which a fewshot-sla checkpoint never holds (read with "
                "weights_only=True: nothing in the file ran)")
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    detail = next((ln for ln in lines if not ln.startswith(("Weights only load failed", "Please file",
                                                            "Check the documentation", "(1)", "(2)"))),
                  lines[-1] if lines else type(err).__name__)
    return f"weights_only loading does not allow what it holds ({detail}; nothing in the file ran)"


def _check_container(path: Path, head: bytes) -> None:
    """Refuse in one line what is not a file ``torch.save`` writes: TorchScript, other zip archives,
    anything that is neither a zip archive nor a pickle."""
    if not head:
        raise CheckpointRefusedError(f"{path} is not a fewshot-sla checkpoint (the file is empty); {_FIX}")
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise CheckpointRefusedError(
                f"{path} is not a fewshot-sla checkpoint (a damaged or truncated zip archive: {e}); {_FIX}"
            ) from None
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            raise CheckpointRefusedError(
                f"{path}: refused to load: it is a TorchScript archive (what `fewshot-sla export` writes), not a "
                f"checkpoint (it holds code); {_FIX}"
            )
        if not any(n.endswith("/data.pkl") for n in names):
            raise CheckpointRefusedError(
                f"{path} is not a fewshot-sla checkpoint (a zip archive without the data.pkl torch.save writes); "
                f"{_FIX}"
            )
        return
    if head[:1] != b"\x80":  # pickle protocol 2+: torch's legacy (non-zip) format starts with one
        raise CheckpointRefusedError(
            f"{path} is not a fewshot-sla checkpoint (not written by torch.save: neither a zip archive nor a "
            f"pickle); {_FIX}"
        )


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with :data:`LEGACY_NUMPY` allowed, converted by
    :func:`to_plain`. What it refuses raises :class:`CheckpointRefusedError` (one line); other
    read errors (a truncated file, ...) are torch's own exceptions."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
    _check_container(path, head)
    try:
        with torch.serialization.safe_globals(LEGACY_NUMPY), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="torch.serialization")  # one line only
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointRefusedError(f"{path}: refused to load: {_refusal(path, head, e)}; {_FIX}") from None
    except RuntimeError as e:
        if "weights_only" not in str(e):
            raise
        raise CheckpointRefusedError(f"{path}: refused to load: {_refusal(path, head, e)}; {_FIX}") from None
    return to_plain(obj, strict=False)


def _items(obj: dict, strict: bool) -> Iterator[tuple[Any, Any, Any, Any]]:
    for k, v in obj.items():
        yield k, to_plain(k, strict), v, to_plain(v, strict)


def to_plain(obj: Any, strict: bool = True) -> Any:
    """``obj`` with NumPy arrays as lists, NumPy scalars as Python numbers, paths as strings, enums
    as their values and dataclasses as dicts (recursively); tensors and plain values are kept as
    they are, and a container with nothing to convert is returned itself (a ``state_dict``'s
    ``OrderedDict`` keeps its ``_metadata``). Anything else is a ``TypeError`` when ``strict`` (what
    is saved: a checkpoint would need code to rebuild it), else kept (what ``weights_only`` loading
    built, e.g. a ``torch.layout``)."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):  # before float: np.float64 is one
        return obj.item()
    if isinstance(obj, enum.Enum):  # before int and str: IntEnum, StrEnum
        return to_plain(obj.value, strict)
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, torch.Tensor, torch.dtype,
                                       torch.device, torch.Size)):
        return obj
    if isinstance(obj, PurePath):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name), strict) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        items = list(_items(obj, strict))
        if all(k2 is k and v2 is v for k, k2, v, v2 in items):
            return obj
        out = copy.copy(obj)  # the same type (OrderedDict) and attributes (a state_dict's _metadata)
        out.clear()
        out.update((k2, v2) for _, k2, _, v2 in items)
        return out
    if isinstance(obj, (list, tuple)):
        new = [to_plain(v, strict) for v in obj]
        if all(a is b for a, b in zip(new, obj)) and type(obj) in (list, tuple):
            return obj
        return tuple(new) if isinstance(obj, tuple) else new
    if isinstance(obj, (set, frozenset)):
        return sorted((to_plain(v, strict) for v in obj), key=repr)
    if not strict:
        return obj
    raise TypeError(f"a checkpoint holds only tensors and plain containers, not a {type(obj).__module__}."
                    f"{type(obj).__qualname__}")
