"""Run directories: the resolved config, JSONL metrics and checkpoints of one run.

Shared by meta-training (``meta/``) and the supervised pipelines (``supervised/``).
A run directory holds::

    config.json      the resolved configuration (dataclass -> JSON)
    metrics.jsonl    one JSON object per logged step
    last.pt          latest checkpoint (model, optimiser, scheduler, RNG states, progress)
    best.pt          checkpoint with the best validation score
    summary.json     final numbers

Files are written atomically (:mod:`fewshot_sla.atomic`). When the ``tensorboard`` package is
installed, :meth:`RunDir.log` also writes each record's numbers as TensorBoard scalars (tag
``<kind>/<key>``, step = the record's ``step``) into the run directory: ``tensorboard --logdir runs``.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import NoSpaceError, atomic_torch_save, atomic_write_text, is_no_space
from .safe_load import CheckpointRefusedError, safe_torch_load

__all__ = ["NonFiniteStateError", "check_finite_state", "load_checkpoint", "resolve_checkpoint", "run_name",
           "to_jsonable", "RunDir"]


class NonFiniteStateError(ValueError):
    """A checkpoint holds NaN or infinite weights."""


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint file ``path`` names: a run directory's ``best.pt``, else its ``last.pt``
    (a one-line :class:`FileNotFoundError` when it has neither), or ``path`` itself."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(
            f"{path} holds no best.pt or last.pt; pass a run directory whose run wrote a checkpoint, or a .pt file"
        )
    return path


def run_name(checkpoint: str | os.PathLike) -> str:
    """The run a checkpoint belongs to: the folder of a ``.pt`` file, else the run directory's name."""
    p = Path(checkpoint)
    return p.parent.name if p.suffix == ".pt" else p.name


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`atomic_torch_save` (a ``.pt`` file, or a run directory:
    its ``best.pt``, else ``last.pt``), with a one-line error when it is absent or unreadable."""
    path = resolve_checkpoint(path)
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint not found: {path} (pass a run directory holding best.pt/last.pt, or a .pt file)"
        )
    try:
        ckpt = safe_torch_load(path, map_location=map_location)  # weights_only: a checkpoint never runs code
    except CheckpointRefusedError:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised as one line naming the file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(
            f"{path} is not a fewshot-sla checkpoint (torch.load: {first}); pass a best.pt or last.pt "
            "written by fewshot-sla (a truncated file is not one)"
        ) from e
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} is not a fewshot-sla checkpoint (it holds a {type(ckpt).__name__}, not a dict)")
    return ckpt


def check_finite_state(state_dict: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Raise :class:`NonFiniteStateError` (one line naming ``path`` and the first tensor with a
    NaN or infinite value) unless every floating-point tensor of ``state_dict`` is finite."""
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise NonFiniteStateError(
                f"{path} holds non-finite weights ({name}: {bad} of {value.numel()} values NaN or inf): the run "
                "diverged before it was saved; use an earlier checkpoint or train again with a lower --lr"
            )


def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses, paths, tensors and numpy scalars into JSON-serialisable values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def _scalars(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric fields of a (nested) metrics record, nested keys joined with ``_``."""
    out: dict[str, float] = {}
    for k, v in record.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_scalars(v, key + "_"))
        elif isinstance(v, bool) or v is None:
            continue
        elif isinstance(v, (int, float, np.integer, np.floating)):
            out[key] = float(v)
        elif isinstance(v, torch.Tensor) and v.numel() == 1:
            out[key] = float(v.item())
    return out


def _tensorboard_writer(path: Path) -> Any:
    """A ``SummaryWriter`` on ``path`` when the ``tensorboard`` package is installed, else ``None``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard absent or unusable (e.g. an incompatible protobuf): no events
        return None
    return SummaryWriter(log_dir=str(path))


class RunDir:
    """One run's directory. Only the main process (rank 0) should write (``enabled=False`` on
    other ranks turns every write into a no-op); ``tensorboard=False`` writes no TensorBoard events."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True, tensorboard: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.tensorboard = tensorboard
        self._writer: Any = None
        self._writer_tried = False
        if enabled:
            self.path.mkdir(parents=True, exist_ok=True)

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    def start_fresh(self) -> None:
        """Begin a new (not resumed) run in this directory: drop the ``metrics.jsonl`` rows and
        TensorBoard events a previous run left there (e.g. one killed before its first checkpoint)."""
        if not self.enabled:
            return
        self.close()
        (self.path / "metrics.jsonl").unlink(missing_ok=True)
        for events in self.path.glob("events.out.tfevents.*"):
            events.unlink(missing_ok=True)

    def require_checkpoint(self, flag: str = "--resume") -> Path:
        """``last.pt`` of this run directory, or a one-line :class:`FileNotFoundError` saying why
        there is none (no such directory; a run that never wrote a checkpoint; not a run directory)."""
        p = self.path
        if not p.exists():
            raise FileNotFoundError(f"{flag} {p}: no such directory; pass the directory of a fewshot-sla run")
        if not p.is_dir():
            raise FileNotFoundError(f"{flag} {p}: a file, not a run directory; pass the directory of a fewshot-sla run")
        if self.last.is_file():
            return self.last
        if (p / "config.json").is_file():
            raise FileNotFoundError(
                f"{flag} {p}: the run never wrote a checkpoint (config.json present, no last.pt): "
                f"start it again without {flag}"
            )
        raise FileNotFoundError(
            f"{flag} {p}: not a run directory (no config.json, no last.pt); pass the directory of a fewshot-sla run"
        )

    def write_json(self, name: str, obj: Any) -> None:
        if self.enabled:
            atomic_write_text(self.path / name, json.dumps(to_jsonable(obj), indent=2) + "\n")

    def read_json(self, name: str) -> Any:
        p = self.path / name
        if not p.exists():
            raise FileNotFoundError(f"{p} not found: is {self.path} a fewshot-sla run directory?")
        return json.loads(p.read_text())

    def log(self, record: Mapping[str, Any]) -> None:
        """Append one JSON object to ``metrics.jsonl`` (and its numbers to TensorBoard, as
        ``<kind>/<key>`` at the record's ``step``, when tensorboard is installed)."""
        if not self.enabled:
            return
        try:
            with open(self.path / "metrics.jsonl", "a") as f:
                f.write(json.dumps(to_jsonable(record)) + "\n")
                f.flush()
        except OSError as e:
            if not is_no_space(e):
                raise
            err = NoSpaceError(f"no space left on {self.path} while appending to metrics.jsonl; free some space "
                               f"and resume the run (--resume {self.path})")
            err.errno = errno.ENOSPC
            raise err from None
        self._log_tensorboard(record)

    def _log_tensorboard(self, record: Mapping[str, Any]) -> None:
        if not self.tensorboard:
            return
        if not self._writer_tried:
            self._writer_tried = True
            self._writer = _tensorboard_writer(self.path)
        if self._writer is None:
            return
        kind = str(record.get("kind", "metrics"))
        step = record.get("step")
        step = int(step) if isinstance(step, (int, float, np.integer)) and not isinstance(step, bool) else None
        for key, value in _scalars({k: v for k, v in record.items() if k not in ("step", "kind")}).items():
            self._writer.add_scalar(f"{kind}/{key}", value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the TensorBoard writer (if any); a later :meth:`log` opens a new one."""
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        self._writer_tried = False

    def read_metrics(self) -> list[dict]:
        p = self.path / "metrics.jsonl"
        if not p.exists():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, keep: Callable[[dict], bool]) -> None:
        """Keep only the metric records for which ``keep(record)`` is true (used on resume,
        so records logged after the checkpoint being resumed from are not duplicated)."""
        if self.enabled:
            kept = [r for r in self.read_metrics() if keep(r)]
            atomic_write_text(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))

    def save(self, state: Mapping[str, Any], best: bool = False) -> None:
        """Write ``last.pt`` (and ``best.pt`` when ``best``) atomically."""
        if not self.enabled:
            return
        atomic_torch_save(dict(state), self.last)
        if best:
            atomic_torch_save(dict(state), self.best)
