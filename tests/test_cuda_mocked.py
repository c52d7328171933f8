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

from fewshot_sla import seeding


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
    state = seeding.get_rng_state()  # CPU states; the CUDA part as a machine with n_gpus writes it
    state["cuda"] = [torch.full((16,), 100 + i, dtype=torch.uint8) for i in range(n_gpus)]
    return state


@pytest.mark.parametrize("saved,visible", [(4, 1), (2, 2), (1, 3)])
def test_resume_restores_the_cuda_rng_of_the_devices_that_exist(monkeypatch, saved, visible):
    state = _checkpoint_rng(saved)
    want_cpu = torch.rand(3)
    want_py, want_np = random.random(), np.random.rand()
    fake = FakeCudaRng(visible)
    fake.install(monkeypatch)
    seeding.set_rng_state(state)  # a 4-GPU checkpoint on 1 GPU raised IndexError
    n = min(saved, visible)
    assert fake.calls == list(range(n))
    for i in range(n):
        assert torch.equal(fake.states[i], state["cuda"][i])
    for i in range(n, visible):  # devices without a saved state keep theirs
        assert torch.equal(fake.states[i], torch.full((16,), i, dtype=torch.uint8))
    assert torch.equal(torch.rand(3), want_cpu) and random.random() == want_py and np.random.rand() == want_np


def test_resume_of_a_cpu_checkpoint_leaves_the_cuda_rng_alone(monkeypatch):
    state = seeding.get_rng_state()
    assert "cuda" not in state  # no CUDA here
    fake = FakeCudaRng(2)
    fake.install(monkeypatch)
    seeding.set_rng_state(state)
    assert fake.calls == []


# ------------------------------------------------------------------------ torchrun's CUDA device
class FakeDist:
    """``torch.cuda.set_device`` and ``torch.distributed.init_process_group`` recording their
    arguments, on a node with ``n`` GPUs, launched by torchrun as local rank ``local_rank``."""

    def __init__(self, monkeypatch, n: int, rank: int, world: int, local_rank: int) -> None:
        import torch.distributed as dist

        self.current: list[torch.device] = []
        self.groups: list[dict] = []
        for k, v in {"RANK": rank, "WORLD_SIZE": world, "LOCAL_RANK": local_rank}.items():
            monkeypatch.setenv(k, str(v))
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "set_device", lambda d: self.current.append(torch.device(d)))
        monkeypatch.setattr(dist, "is_initialized", lambda: bool(self.groups))
        monkeypatch.setattr(dist, "init_process_group", lambda **kw: self.groups.append(kw))


@pytest.mark.parametrize("name", ["cuda", "auto", None])
def test_torchrun_on_cuda_binds_nccl_and_the_current_device_to_local_rank(monkeypatch, name):
    from fewshot_sla.distributed import init_distributed, resolve_dist_device

    fake = FakeDist(monkeypatch, n=4, rank=6, world=8, local_rank=2)  # second node, third GPU
    device = resolve_dist_device(name)
    assert device == torch.device("cuda", 2)
    info = init_distributed(device, timeout_s=30)
    assert (info.rank, info.world_size, info.local_rank) == (6, 8, 2)
    assert fake.current == [torch.device("cuda", 2)]
    assert len(fake.groups) == 1
    group = fake.groups[0]
    assert group["backend"] == "nccl" and group["device_id"] == torch.device("cuda", 2)
    assert group["timeout"].total_seconds() == 30


def test_init_distributed_uses_the_device_it_is_given_not_local_rank(monkeypatch):
    from fewshot_sla.distributed import init_distributed

    fake = FakeDist(monkeypatch, n=4, rank=1, world=2, local_rank=1)
    init_distributed(torch.device("cuda", 3))  # e.g. a caller mapping ranks to GPUs itself
    assert fake.current == [torch.device("cuda", 3)] and fake.groups[0]["device_id"] == torch.device("cuda", 3)


@pytest.mark.parametrize("name", ["cuda:0", "cuda:1"])
def test_an_explicit_gpu_under_torchrun_is_a_one_line_config_error(monkeypatch, name):
    from fewshot_sla.config import ConfigError
    from fewshot_sla.distributed import resolve_dist_device

    FakeDist(monkeypatch, n=2, rank=0, world=2, local_rank=0)
    with pytest.raises(ConfigError) as e:
        resolve_dist_device(name)
    msg = str(e.value)
    assert "\n" not in msg and f"--device {name}" in msg and "--device cuda" in msg and "CUDA_VISIBLE_DEVICES" in msg


def test_an_explicit_gpu_without_torchrun_is_kept(monkeypatch):
    from fewshot_sla.distributed import init_distributed, resolve_dist_device

    fake = FakeDist(monkeypatch, n=2, rank=0, world=1, local_rank=0)
    assert resolve_dist_device("cuda:1") == torch.device("cuda", 1)
    init_distributed(torch.device("cuda", 1))  # one process: no process group, device untouched
    assert fake.current == [] and fake.groups == []


def test_gloo_on_cpu_under_torchrun_gets_no_device_id(monkeypatch):
    from fewshot_sla.distributed import init_distributed, resolve_dist_device

    fake = FakeDist(monkeypatch, n=0, rank=1, world=2, local_rank=1)
    device = resolve_dist_device("cpu")
    init_distributed(device)
    assert device == torch.device("cpu") and fake.current == []
    assert fake.groups[0]["backend"] == "gloo" and "device_id" not in fake.groups[0]


# ------------------------------------------------------------------------ benchmarks
def _load_benchmark(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_meta_train_speed_synchronises_the_device_in_use_not_the_current_one(monkeypatch):
    bench = _load_benchmark("meta_train_speed")
    from fewshot_sla.meta.config import MetaTrainConfig

    calls = []

    class FakeTrainer:  # a trainer on GPU 3 (torchrun local rank 3, or --device cuda:3)
        device = torch.device("cuda", 3)
        dist = type("D", (), {"world_size": 1, "is_main": True})()

        def __init__(self, cfg, datasets):
            pass

        def train_step(self):
            calls.append("step")

    monkeypatch.setattr(bench, "MetaTrainer", FakeTrainer)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    bench.measure(MetaTrainConfig(dataset="folder", quiet=True, device="cpu"), None, steps=2, warmup=1)
    gpu3 = torch.device("cuda", 3)
    assert calls == ["step", gpu3, "step", "step", gpu3]


def test_host_syncs_counts_each_kind_of_event_once():
    """benchmarks/host_syncs.py's counter against a hand-made sequence of known events on meta
    tensors (the GPU stand-in), outside and inside fewshot_sla code."""
    bench = _load_benchmark("host_syncs")
    meta = torch.device("meta")
    x = torch.empty(4, 3, device=meta)
    with bench.counting() as c:
        int(x[0, 0])  # item: sync
        x[:, 0].tolist()  # tolist: sync
        (x > 0).nonzero()  # data-dependent size: sync
        torch.rand(3).to(meta)  # blocking copy
        torch.rand(3).to(meta, non_blocking=True)  # asynchronous copy
        torch.as_tensor([1.0, 2.0], device=meta)  # Python data made on the device: copy
        x[:, [0, 2]]  # a Python-list index: copy
        x.sum(0) * 2  # on-device work: nothing
        torch.empty(2, device=meta).copy_(torch.rand(2))  # copy_ from the host
    assert sum(c.syncs.values()) == 3 and sum(c.copies.values()) == 5 and sum(c.blocking.values()) == 4
    with bench.counting() as c:  # attributed to the innermost fewshot_sla frame
        from fewshot_sla.data.augment import _send

        _send([torch.rand(3), torch.rand(2)], meta)
    assert list(c.copies.items()) == [(next(iter(c.copies)), 1)] and not c.blocking
    assert next(iter(c.copies)).startswith("fewshot_sla/data/augment.py:")
    assert "_send" in next(iter(c.copies))
