"""Mixed precision, one dialect for both pipelines: ``--amp none|bf16|fp16`` (CUDA only)."""

from __future__ import annotations

import contextlib
import warnings

import torch

__all__ = ["AMP_MODES", "amp_dtype", "autocast", "normalize_amp"]

AMP_MODES: tuple[str, ...] = ("none", "bf16", "fp16")


def normalize_amp(value: str | bool) -> str:
    """``--amp`` as one of :data:`AMP_MODES`; the supervised pipeline's old booleans map to
    ``bf16`` (true) and ``none`` (false)."""
    if isinstance(value, bool):
        return "bf16" if value else "none"
    text = str(value).strip().lower()
    return {"true": "bf16", "false": "none"}.get(text, text)


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp amp`` on ``device``: ``None`` for ``none``, and off CUDA
    (with a warning that the run is in float32)."""
    if amp == "none":
        return None
    if device.type != "cuda":
        warnings.warn(f"--amp {amp} is only used on CUDA; running in float32 on {device}", stacklevel=3)
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` with ``dtype`` on ``device``; a no-op context for ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
