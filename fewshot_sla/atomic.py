"""Atomic file writes: a temporary file in the same directory, flushed, fsynced and renamed over
the target, so a killed process never leaves a truncated file; the file then gets the mode the
umask gives new files (``0o666 & ~umask``). A full disk is one line (:class:`NoSpaceError`) and
the previous file is kept.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

__all__ = ["NoSpaceError", "is_no_space", "atomic_write", "atomic_write_text", "atomic_torch_save"]


class NoSpaceError(OSError):
    """The disk filled up while a file was written atomically (the previous file is kept)."""


def _umask() -> int:
    """The process umask (read without changing it where ``/proc`` tells it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (the only way POSIX offers)
    os.umask(mask)
    return mask


def is_no_space(exc: BaseException, folder: Path | None = None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is ENOSPC / EDQUOT, or torch's
    serializer failing to write (``[enforce fail at inline_container.cc ...]``) in a ``folder``
    whose disk has under 1 MiB free."""
    seen = set()
    first = exc
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    if folder is not None and isinstance(first, RuntimeError) and "inline_container" in str(first):
        try:
            return shutil.disk_usage(folder).free < 1 << 20
        except OSError:
            return False
    return False


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it and rename it over ``path``
    with the umask's mode (not ``mkstemp``'s 0600); on any error ``path`` is left as it was."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        if is_no_space(e):
            raise
        raise _not_writable(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if is_no_space(e, path.parent):
            kept = f"previous {path.name} kept" if path.exists() else f"{path.name} not written"
            err = NoSpaceError(
                f"no space left on {path.parent} while writing {path.name}, {kept}; "
                "free some space (or pass another run directory) and run again"
            )
            err.errno = errno.ENOSPC
            raise err from None
        if isinstance(e, OSError):
            raise _not_writable(path, e) from None
        raise


def _not_writable(path: Path, exc: OSError) -> Exception:
    """One line naming ``path`` for a write that failed (permissions, read-only file system, ...)."""
    from .writable import NotWritableError, reason

    why = reason(exc)
    return NotWritableError(f"cannot write {path} ({why}); make {path.parent} writable or write elsewhere", why)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a partial file at ``path``."""
    atomic_write(path, lambda f: torch.save(obj, f))
