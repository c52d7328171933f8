"""Run directories: resolved config, JSONL metrics, atomic checkpoints, exact resume.

Shared by meta-training (``meta/``) and the supervised pipelines (``supervised/``).
A run directory holds::

    config.json      the resolved configuration (dataclass -> JSON)
    metrics.jsonl    one JSON object per logged step
    last.pt          latest checkpoint (model, optimiser, scheduler, RNG states, progress)
    best.pt          checkpoint with the best validation score
    summary.json     final numbers

Checkpoints are written to a temporary file in the same directory, flushed, fsynced and
renamed over the target, so a killed run never leaves a truncated ``last.pt``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_torch_save",
    "load_checkpoint",
    "get_rng_state",
    "set_rng_state",
    "seed_everything",
    "derive_seed",
    "seeded_generator",
    "resolve_device",
    "to_jsonable",
    "RunDir",
]


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it and rename it over ``path``;
    on any error the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory + rename)."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a partial file at ``path``."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`atomic_torch_save`, with a clear error when absent."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).exists():
                path = path / name
                break
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint not found: {path} (pass a run directory holding best.pt/last.pt, or a .pt file)"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ValueError(f"could not read checkpoint {path}: {e}; is it a complete fewshot-sla checkpoint?") from e


def get_rng_state() -> dict[str, Any]:
    """Every RNG state a training loop touches (Python, NumPy, torch CPU and CUDA)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` saved.

    CUDA states are restored for the devices visible now: device ``i`` gets the state saved
    for device ``i``, so a checkpoint written with 4 GPUs visible resumes with 1 (device 0's
    state) and one written on the CPU leaves the CUDA generators as they are. The trainers
    reseed every chunk (``derive_seed``), so the other devices' states are not needed.
    """
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        for i, s in enumerate(list(cuda)[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends only on the integer ``keys`` (``numpy.random.SeedSequence``).

    Training loops seed each step's (and each gradient chunk's) randomness from
    ``(seed, stream, step, chunk)`` instead of carrying a generator along, so a step's random
    numbers do not depend on what ran before it: resume is exact and a chunk computes the
    same thing on whichever process runs it (``--accumulate`` and torchrun agree).
    """
    words = np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(2, np.uint32)
    return (int(words[0]) | (int(words[1]) << 32)) & ((1 << 63) - 1)


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` of ``keys``."""
    return torch.Generator().manual_seed(derive_seed(*keys))


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise ``torch.device(name)`` checked."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} was requested but CUDA is not available; use --device cpu")
    return dev


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


class RunDir:
    """One run's directory. Only the main process (rank 0) should write (``enabled=False``
    on other ranks turns every write into a no-op)."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.mkdir(parents=True, exist_ok=True)

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    def write_json(self, name: str, obj: Any) -> None:
        if self.enabled:
            atomic_write_text(self.path / name, json.dumps(to_jsonable(obj), indent=2) + "\n")

    def read_json(self, name: str) -> Any:
        p = self.path / name
        if not p.exists():
            raise FileNotFoundError(f"{p} not found: is {self.path} a fewshot-sla run directory?")
        return json.loads(p.read_text())

    def log(self, record: Mapping[str, Any]) -> None:
        """Append one JSON object to ``metrics.jsonl``."""
        if self.enabled:
            with open(self.path / "metrics.jsonl", "a") as f:
                f.write(json.dumps(to_jsonable(record)) + "\n")
                f.flush()

    def read_metrics(self) -> list[dict]:
        p = self.path / "metrics.jsonl"
        if not p.exists():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, keep: callable) -> None:
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
