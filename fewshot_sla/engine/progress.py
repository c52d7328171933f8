"""The one progress bar of training and evaluation (tqdm on a terminal, nothing otherwise)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["progress"]


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, n: int = 1) -> None: ...

    def set_postfix(self, **kw: Any) -> None: ...

    def close(self) -> None: ...


def progress(total: int, desc: str, *, quiet: bool = False, initial: int = 0, leave: bool = False,
             unit: str = "it"):
    """A tqdm bar of ``total`` steps (a no-op bar when ``quiet`` or stderr is not a terminal)."""
    if quiet or not sys.stderr.isatty():
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=leave, dynamic_ncols=True, unit=unit)
