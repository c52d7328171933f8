"""One live run per run directory: an OS file lock on ``RUN/.lock`` held for the life of a run.

The lock is ``flock`` on a file descriptor, so the kernel drops it when the process ends however
it ends (a crash, SIGKILL, a preempted node): a dead run never blocks its folder. The file holds
the holder's PID and host, read back to name them when a second ``meta-train``, ``supervised`` or
``--resume`` is refused; it is removed when the run ends (a killed run leaves it, stale and harmless:
only the kernel lock counts). ``eval``, ``predict`` and ``export`` never lock, so they read a live
run's ``best.pt`` (written atomically) while it trains. Under torchrun only rank 0 locks.

A file system without ``flock`` support (some network mounts) runs unlocked, with a note.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
import time
from pathlib import Path

from .config import ConfigError

try:
    import fcntl
except ImportError:  # not POSIX: no locking
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "RunDirLocked", "RunLock", "holder", "check_not_locked"]

LOCK_NAME = ".lock"
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class RunDirLocked(ConfigError):
    """The run directory is held by a live run (one line naming its PID)."""


def holder(lock_file: str | os.PathLike, wait_s: float = 0.5) -> str:
    """``pid N`` (and ``on HOST`` when another host) of the process that wrote ``lock_file``;
    ``pid unknown`` when it is empty (its holder has not written it yet after ``wait_s``)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            words = Path(lock_file).read_text().split()
        except OSError:
            words = []
        if words or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    if not words:
        return "pid unknown"
    where = f" on {words[1]}" if len(words) > 1 and words[1] != socket.gethostname() else ""
    return f"pid {words[0]}{where}"


def _refusal(run_dir: Path) -> RunDirLocked:
    return RunDirLocked(f"run directory {run_dir} is in use by a live run ({holder(run_dir / LOCK_NAME)}); wait "
                        "for it to end (or stop it), or choose another --run-dir")


def _not_writable(run_dir: Path, e: OSError) -> ConfigError:
    return ConfigError(f"cannot write the run folder {run_dir} ({e.strerror or e}); choose another --run-dir")


def check_not_locked(run_dir: str | os.PathLike) -> None:
    """Raise :class:`RunDirLocked` when a live run holds ``run_dir`` (a shared probe: it takes
    nothing and writes nothing)."""
    path = Path(run_dir) / LOCK_NAME
    if fcntl is None:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file (or unreadable): nobody holds it that we can tell
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _refusal(Path(run_dir)) from None
    except OSError:
        return
    finally:
        os.close(fd)  # drops the shared lock too


class RunLock:
    """The lock of one run directory: :meth:`acquire` it before writing anything there,
    :meth:`release` it at the end (the kernel releases it if the process dies first)."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.created_dir = False  # whether acquire() created the run directory
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, run_dir: str | os.PathLike) -> RunLock:
        """Create ``run_dir`` if needed and lock it, or raise :class:`RunDirLocked` (a live run
        holds it) or :class:`~fewshot_sla.config.ConfigError` (it cannot be written)."""
        run_dir = Path(run_dir)
        if fcntl is None:
            return self
        try:
            self.created_dir = not run_dir.exists()
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _not_writable(run_dir, e) from None
        path = run_dir / LOCK_NAME
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                self._remove_created(run_dir)
                raise _not_writable(run_dir, e) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise _refusal(run_dir) from None
            except OSError as e:
                os.close(fd)
                if e.errno not in _UNSUPPORTED:
                    raise _not_writable(run_dir, e) from None
                print(f"note: {run_dir} does not support file locks; a second run into it is not refused",
                      file=sys.stderr)
                return self
            # a holder that was releasing may have unlinked the file between our open and flock
            try:
                here, there = os.fstat(fd), os.stat(path)
                if (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd, self.path = fd, path
        return self

    def release(self, remove_dir: bool = False) -> None:
        """Remove the lock file and drop the lock (``remove_dir``: also the run directory when
        :meth:`acquire` created it and nothing else was written there)."""
        if self._fd is None or self.path is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)  # while still holding it: see acquire's inode check
        if remove_dir:
            self._remove_created(self.path.parent)
        os.close(self._fd)
        self._fd = None

    def _remove_created(self, run_dir: Path) -> None:
        if self.created_dir:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only when empty

    def __del__(self) -> None:  # a trainer dropped without fit(): let the kernel lock go
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
