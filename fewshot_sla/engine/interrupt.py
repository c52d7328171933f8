"""SIGINT and SIGTERM during training: the step in progress finishes, ``last.pt`` is written at
that step, and the run ends with :class:`RunInterrupted` (one line, exit code ``128 + signal``:
130 for SIGINT, 143 for SIGTERM), resumable exactly with ``--resume``.

:class:`StopSignals` installs the handlers for the life of :meth:`~.trainer.Trainer.fit`'s
training loop (only in the main thread, where Python delivers signals) and restores the previous
ones after; a signal that was ignored when training started (``nohup``, a background job's
SIGINT) stays ignored. The handler only records the signal, so a second one while ``last.pt`` is
being written changes nothing (the write is atomic anyway); SIGKILL stops at once, losing the
steps since the last checkpoint.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

__all__ = ["RunInterrupted", "StopSignals", "interrupted_message"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(Exception):
    """Training stopped on signal ``signum`` after writing ``last.pt``; ``exit_code`` is ``128 + signum``."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def interrupted_message(signum: int, step: int, total: int, command: str, run_dir: Any) -> str:
    """The one line printed when a run stops on a signal."""
    return (f"interrupted at step {step} of {total} ({signal_name(signum)}); resume with: "
            f"fewshot-sla {command} --resume {run_dir}")


class StopSignals:
    """While entered: SIGINT and SIGTERM set :attr:`received` (the first signal's number) instead
    of ending the process."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        else:
            print(f"{signal_name(signum)} received again: finishing the step and writing last.pt "
                  "(SIGKILL stops at once, losing the steps since the last checkpoint)", file=sys.stderr, flush=True)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                if signal.getsignal(s) is not signal.SIG_IGN:
                    self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()
