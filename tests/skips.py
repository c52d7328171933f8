"""Skips by group, so that CI can tell a skip it allows from one that would hide a broken feature.

The suite's skips go through these helpers (but for the platform ones below), which raise pytest's
skip carrying a :class:`SkipGroup`; ``conftest.py`` prints one line per group and reason at the end of the run and, when
``FEWSHOT_SLA_CI=1`` (set by ``.ci/run``), fails the run on a skip that :func:`ci_verdict` refuses:

- ``cuda``: the test needs a CUDA device. Allowed: CI runs on CPUs.
- ``data``: real data is absent from the data folder (``$FEWSHOT_SLA_DATA``, default
  ``../shared/data``). Allowed where that folder does not exist, and for the datasets in
  :data:`NOT_SHARED` (which the shared folder does not carry); refused where the folder exists
  and should hold the dataset (it lacks it, or the test looks in the wrong place).
- ``package``: an optional Python or Debian package is not installed. Refused: ``.ci/run``
  installs every one the tests use. One exception, named by ``.ci/run`` itself: a system package
  that it could not install on that machine (no root and no sudo, or apt-get failed) is listed in
  ``FEWSHOT_SLA_CI_UNINSTALLABLE`` as ``name=why`` and its skip is allowed with that reason, so
  the run says it loudly instead of failing for the machine's sake.
- any other skip (a bare ``pytest.skip``, ``skipif``, ``importorskip``): refused, so that a new
  skip states its group. The platform conditions that CI's Linux machine meets (torch.distributed
  built, ``/dev/full``) stay plain ``skipif`` marks: there, CI refuses them like any such skip.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_VARIABLE = "FEWSHOT_SLA_DATA"
CI_VARIABLE = "FEWSHOT_SLA_CI"
#: set by ``.ci/run``: ``name=why`` of the system packages it could not install, ``;``-separated
UNINSTALLABLE_VARIABLE = "FEWSHOT_SLA_CI_UNINSTALLABLE"
GROUPS = ("cuda", "data", "package")
#: datasets the tests read from the data folder that the shared folder does not carry, and why
NOT_SHARED = {
    "CUB-200-2011": "not in the shared data folder (the 1.1 GB archive is not downloaded for CI); "
                    "its loader is tested on a synthetic archive in the official layout",
}


@dataclass(frozen=True)
class SkipGroup:
    """What a skip raised by these helpers carries (as ``skip_group``): its group (one of
    :data:`GROUPS`); for ``data``, the dataset and the folder it was looked for in; for a system
    ``package``, its name as ``.ci/run`` installs it."""

    group: str
    dataset: str | None = None
    root: Path | None = None
    package: str | None = None

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"unknown skip group {self.group!r}: one of {', '.join(GROUPS)}")


def skip(group: SkipGroup, reason: str) -> NoReturn:
    """``pytest.skip(reason)`` carrying ``group``; pytest reports it at the test's line."""
    __tracebackhide__ = True
    e = pytest.skip.Exception(reason)
    e.skip_group = group
    raise e


def group_of(e: BaseException) -> SkipGroup | None:
    """The group a skip exception carries, None for a skip raised otherwise."""
    return getattr(e, "skip_group", None)


def skip_no_cuda() -> None:
    """Skip the test (group ``cuda``) where no CUDA device is available."""
    __tracebackhide__ = True
    import torch  # here: the skip report (which imports this module) runs without torch

    if not torch.cuda.is_available():
        skip(SkipGroup("cuda"), "needs a CUDA device")


def skip_missing_package(name: str, install: str, error: BaseException | None = None,
                         system_package: str | None = None) -> NoReturn:
    """Skip the test (group ``package``): ``name`` is not installed (``install`` installs it);
    ``system_package``: the Debian package ``.ci/run`` installs for it."""
    __tracebackhide__ = True
    why = f" ({type(error).__name__}: {str(error)[:120]})" if error is not None else ""
    skip(SkipGroup("package", package=system_package), f"{name} is not installed{why}: {install}")


def import_or_skip(module: str, install: str) -> ModuleType:
    """``module``, imported; skips the test (group ``package``) where it cannot be imported."""
    __tracebackhide__ = True
    try:
        return importlib.import_module(module)
    except ImportError as e:
        skip_missing_package(module, install, e)


def real_data_root(environ: Mapping[str, str] = os.environ) -> Path:
    """``$FEWSHOT_SLA_DATA`` (a relative value is relative to the repository root), else
    ``../shared/data`` next to the repository."""
    value = environ.get(DATA_VARIABLE) or "../shared/data"
    p = Path(value).expanduser()
    return p if p.is_absolute() else (REPO / p).resolve()


def find_data(*names: str, root: Path | None = None) -> Path | None:
    """The first of ``names`` (paths relative to the data folder) that exists there, else None."""
    root = real_data_root() if root is None else root
    return next((root / n for n in names if (root / n).exists()), None)


def require_data(dataset: str, *names: str) -> Path:
    """The first of ``names`` in the data folder; skips the test (group ``data``) where none exists."""
    __tracebackhide__ = True
    root = real_data_root()
    found = find_data(*names, root=root)
    if found is None:
        skip(SkipGroup("data", dataset, root), f"{dataset} not found: put {' or '.join(names)} in {root} (or set "
                                               f"{DATA_VARIABLE} to the folder holding it)")
    return found


def uninstallable(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """``{package: why}`` of the system packages ``.ci/run`` could not install on this machine."""
    pairs = (item.partition("=") for item in environ.get(UNINSTALLABLE_VARIABLE, "").split(";") if item.strip())
    return {name.strip(): why.strip() or "no reason given" for name, _, why in pairs}


def ci_verdict(group: str | None, dataset: str | None = None, root: Path | None = None, package: str | None = None,
               environ: Mapping[str, str] = os.environ) -> tuple[bool, str]:
    """Whether CI allows a skip of ``group`` (None: a skip without one), and why."""
    if group == "cuda":
        return True, "CI runs on CPUs"
    if group == "data":
        if dataset in NOT_SHARED:
            return True, NOT_SHARED[dataset]
        if root is None or not root.is_dir():
            return True, f"there is no data folder {root}"
        return False, f"the data folder {root} exists, so it should hold {dataset}"
    if group == "package":
        skipped = uninstallable(environ)
        if package is not None and package in skipped:
            return True, f".ci/run could not install {package} on this machine: {skipped[package]}"
        return False, ".ci/run installs every optional package the tests use"
    return False, f"a skip without a group: raise it with a helper of tests/skips.py ({', '.join(GROUPS)})"
