"""The torch device a run asks for (``--device``)."""

from __future__ import annotations

import re

import torch

from .config import ConfigError

__all__ = ["resolve_device", "check_device"]


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise ``torch.device(name)`` checked."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} was requested but CUDA is not available; use --device cpu")
    return dev


def check_device(name: str) -> None:
    """``--device`` checked before any work: one line (:class:`ConfigError`) for a name that is no device, or
    that needs CUDA where there is none (:func:`resolve_device`'s check)."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name):
        raise ConfigError(f"--device {name} is not a device; use auto, cpu, cuda or cuda:N")
    resolve_device(name)
