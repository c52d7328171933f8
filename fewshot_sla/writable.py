"""Places a command writes to, checked before the long work starts: a folder is created (with its
parents) and probed with a temporary file; a file's folder likewise. A place that cannot be written
is one line (:class:`NotWritableError`) naming the path, the reason and the option that chooses
another place, e.g. ``cannot write the run folder /x/y (Permission denied); choose another --run-dir``.

:func:`writing` turns an error raised later, while the file is written, into the same one line.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["NotWritableError", "reason", "os_error_line", "check_writable_dir", "check_run_dir", "check_writable_file",
           "check_report_output", "writing"]


class NotWritableError(ValueError):
    """A file or folder cannot be written (one line naming it, why, and the fix); ``why`` holds
    the reason alone (so that :func:`writing` can name the option of the command)."""

    def __init__(self, message: str, why: str = "") -> None:
        super().__init__(message)
        self.why = why


def reason(exc: BaseException) -> str:
    """The short reason of an OS error (``Permission denied``, ``Read-only file system``, ...)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return first[:200]


def os_error_line(exc: OSError) -> str:
    """One line for an ``OSError`` nothing caught earlier: the path(s), the reason, what to check."""
    names = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    where = f"{names}: " if names else ""
    return (f"{where}{reason(exc)}; check that the path exists and that you may write it (--traceback shows "
            "where it failed)")


def _fail(path: Path, what: str, fix: str, exc: BaseException | str) -> NotWritableError:
    why = exc if isinstance(exc, str) else reason(exc)
    return NotWritableError(f"cannot write {what} {path} ({why}); {fix}", why)


def check_writable_dir(path: str | os.PathLike, what: str, fix: str, keep: bool = True) -> Path:
    """Create folder ``path`` (and its parents) if needed and write and delete a probe file in it;
    :class:`NotWritableError` ``cannot write <what> <path> (<reason>); <fix>`` when that fails.
    ``keep=False`` removes again the (empty) folders the check created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotWritableError(f"cannot write {what} {path} (a file, not a folder); {fix}")
    created = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".fewshot-sla-probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise _fail(path, what, fix, e) from None
    finally:
        if not keep:
            for p in created:  # deepest first
                try:
                    p.rmdir()
                except OSError:
                    break
    return path


def check_run_dir(path: str | os.PathLike, resume: bool = False) -> Path:
    """:func:`check_writable_dir` for a run folder (left as it was: created by the run itself)."""
    fix = f"make it writable to continue the run (--resume {path})" if resume else "choose another --run-dir"
    return check_writable_dir(path, "the run folder", fix, keep=False)


def check_writable_file(path: str | os.PathLike, what: str, fix: str) -> Path:
    """Check that file ``path`` can be (re)written: its folder is writable (created if needed), it is
    not a folder, and an existing file is writable; else one-line :class:`NotWritableError`."""
    path = Path(path)
    if path.is_dir():
        raise NotWritableError(f"cannot write {what} {path} (a folder, not a file); {fix}")
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise NotWritableError(f"cannot write {what} {path} ({folder} is a file, not a folder); {fix}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
        if path.exists():  # rewriting in place (csv/json of predict) needs the file itself writable
            with open(path, "ab"):
                pass
    except OSError as e:
        raise _fail(path, what, fix, e) from None
    return path


@contextmanager
def writing(path: str | os.PathLike, what: str, fix: str) -> Iterator[Path]:
    """Around the write of ``path``: an ``OSError`` (or torch's serializer failing to write,
    ``inline_container.cc``) becomes one line :class:`NotWritableError` naming ``path``. A full
    disk keeps its own message (:class:`~fewshot_sla.atomic.NoSpaceError`)."""
    from .atomic import NoSpaceError, is_no_space

    path = Path(path)
    try:
        yield path
    except NoSpaceError:
        raise
    except NotWritableError as e:  # e.g. from an atomic write: the same reason, this command's fix
        if not e.why:
            raise
        raise _fail(path, what, fix, e.why) from None
    except OSError as e:
        if is_no_space(e):
            raise
        raise _fail(path, what, fix, e) from None
    except RuntimeError as e:
        if "inline_container" not in str(e) and "open file failed" not in str(e):
            raise
        if is_no_space(e, path.parent if path.parent.exists() else None):
            raise NoSpaceError(f"no space left on {path.parent} while writing {path.name}; free some space and "
                               "run again") from None
        raise _fail(path, what, fix, "the file could not be opened for writing") from None


def check_report_output(output: str, checkpoint: str) -> None:
    """``eval``'s JSON report: ``--output FILE``, else a file next to the checkpoint (its folder)."""
    if output:
        check_writable_file(output, "the evaluation JSON", "pass another --output FILE")
    elif checkpoint:
        ck = Path(checkpoint)
        if ck.exists():
            check_writable_dir(ck if ck.is_dir() else ck.parent, "the evaluation JSON into", "pass --output FILE")
