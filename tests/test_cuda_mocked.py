"""CUDA code paths checked on the CPU with mocked ``torch.cuda`` functions (no GPU needed).

Each test replaces the few ``torch.cuda`` calls the code under test makes by fakes that behave
as the real ones do on a machine with the stated number of GPUs (e.g. setting the RNG state of
a device that does not exist raises ``IndexError``, as ``torch.cuda.default_generators[i]``
does), and checks what the code asked of them.
"""

import random

import numpy as np
import pytest
import torch

from fewshot_sla import runs


class FakeCudaRng:
    """Per-device CUDA RNG states of a machine with ``n`` GPUs."""

    def __init__(self, n: int) -> None:
        self.states = [torch.full((16,), i, dtype=torch.uint8) for i in range(n)]
        self.calls: list[int] = []

    def set_rng_state(self, state: torch.Tensor, device: int | str | torch.device = "cuda") -> None:
        idx = torch.device("cuda", device).index if isinstance(device, int) else torch.device(device).index or 0
        self.calls.append(idx)
        self.states[idx] = state.clone()  # IndexError for a device that does not exist, like torch

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(self.states))
        # torch.cuda.set_rng_state_all calls torch.cuda.random.set_rng_state per device
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set_rng_state)
        monkeypatch.setattr(torch.cuda.random, "set_rng_state", self.set_rng_state)


def _checkpoint_rng(n_gpus: int) -> dict:
    state = runs.get_rng_state()  # CPU states; the CUDA part as a machine with n_gpus writes it
    state["cuda"] = [torch.full((16,), 100 + i, dtype=torch.uint8) for i in range(n_gpus)]
    return state


@pytest.mark.parametrize("saved,visible", [(4, 1), (2, 2), (1, 3)])
def test_resume_restores_the_cuda_rng_of_the_devices_that_exist(monkeypatch, saved, visible):
    state = _checkpoint_rng(saved)
    want_cpu = torch.rand(3)
    want_py, want_np = random.random(), np.random.rand()
    fake = FakeCudaRng(visible)
    fake.install(monkeypatch)
    runs.set_rng_state(state)  # a 4-GPU checkpoint on 1 GPU raised IndexError
    n = min(saved, visible)
    assert fake.calls == list(range(n))
    for i in range(n):
        assert torch.equal(fake.states[i], state["cuda"][i])
    for i in range(n, visible):  # devices without a saved state keep theirs
        assert torch.equal(fake.states[i], torch.full((16,), i, dtype=torch.uint8))
    assert torch.equal(torch.rand(3), want_cpu) and random.random() == want_py and np.random.rand() == want_np


def test_resume_of_a_cpu_checkpoint_leaves_the_cuda_rng_alone(monkeypatch):
    state = runs.get_rng_state()
    assert "cuda" not in state  # no CUDA here
    fake = FakeCudaRng(2)
    fake.install(monkeypatch)
    runs.set_rng_state(state)
    assert fake.calls == []
