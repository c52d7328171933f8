"""Seeding: seeds derived as pure functions of integer keys, and the saved/restored RNG states
(Python, NumPy, torch CPU and CUDA) of an exact resume."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["get_rng_state", "set_rng_state", "seed_everything", "derive_seed", "seeded_generator"]


def get_rng_state() -> dict[str, Any]:
    """Every RNG state a training loop touches (Python, NumPy, torch CPU and CUDA), as tensors and
    plain containers (a checkpoint holds nothing else): NumPy's as ``[name, keys, pos, has_gauss,
    gauss]`` with the keys a list of ints."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [str(name), keys.tolist(), int(pos), int(has_gauss), float(gauss)],
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
    random.setstate(_tuples(state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]  # a list, or the tuple earlier versions saved
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(gauss)))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        for i, s in enumerate(list(cuda)[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


def _tuples(state: Any) -> Any:
    """Python's random state with its lists as tuples (what ``random.setstate`` takes)."""
    return tuple(_tuples(v) for v in state) if isinstance(state, (list, tuple)) else state


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
