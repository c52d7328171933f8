"""Run directories, statistics, configuration layering and LR schedules."""

import argparse
import dataclasses
import math
import os

import numpy as np
import pytest
import torch

from fewshot_sla.atomic import atomic_torch_save
from fewshot_sla.cli_options import add_options
from fewshot_sla.config import ConfigError, build_config
from fewshot_sla.optim import build_optimizer, piecewise_lr_factor
from fewshot_sla.rundir import RunDir, load_checkpoint
from fewshot_sla.seeding import get_rng_state, set_rng_state
from fewshot_sla.stats import mean_ci, paired_difference


def test_mean_ci_by_hand():
    v = [1.0, 0.0, 0.5, 0.5]
    r = mean_ci(v)
    mean = 0.5
    std = math.sqrt(((0.5**2) * 2 + 0 + 0) / 4)  # population std
    assert r.mean == pytest.approx(mean)
    assert r.ci95 == pytest.approx(1.96 * std / 2)
    with pytest.raises(ValueError):
        mean_ci([])


def test_paired_difference_by_hand_and_tighter_than_independent():
    rng = np.random.default_rng(0)
    hard = rng.uniform(0.3, 0.9, 1000)  # per-episode difficulty shared by both methods
    a = np.clip(hard + 0.02 + rng.normal(0, 0.01, 1000), 0, 1)
    b = np.clip(hard + rng.normal(0, 0.01, 1000), 0, 1)
    d = paired_difference(a, b)
    diff = a - b
    assert d.mean == pytest.approx(diff.mean())
    assert d.ci95 == pytest.approx(1.96 * diff.std() / math.sqrt(1000))
    assert d.ci95 < 0.25 * mean_ci(a).ci95
    with pytest.raises(ValueError, match="same episodes"):
        paired_difference([1, 2], [1])


def test_atomic_save_leaves_no_partial_file(tmp_path):
    atomic_torch_save({"x": torch.ones(3)}, tmp_path / "last.pt")

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_torch_save({"x": Boom()}, tmp_path / "last.pt")
    assert os.listdir(tmp_path) == ["last.pt"]  # no temp file left behind
    assert torch.equal(load_checkpoint(tmp_path)["x"], torch.ones(3))  # old checkpoint intact
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_rundir_metrics_and_truncate(tmp_path):
    run = RunDir(tmp_path / "run")
    for s in range(5):
        run.log({"step": s, "loss": 1.0 / (s + 1)})
    run.truncate_metrics(lambda r: r["step"] <= 2)
    assert [r["step"] for r in run.read_metrics()] == [0, 1, 2]
    disabled = RunDir(tmp_path / "other", enabled=False)
    disabled.log({"a": 1})
    assert not (tmp_path / "other").exists()


def test_rng_state_roundtrip():
    state = get_rng_state()
    a = (torch.rand(3), np.random.rand(2))
    set_rng_state(state)
    b = (torch.rand(3), np.random.rand(2))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@dataclasses.dataclass
class Cfg:
    lr: float = dataclasses.field(default=0.1, metadata={"help": "learning rate"})
    steps: int = 10
    name: str = "x"
    amp: bool = False
    milestones: tuple[int, ...] = (5, 8)


def test_config_layering(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('lr = 0.5\nsteps = 3\nmilestones = [1, 2]\n')
    p = argparse.ArgumentParser()
    add_options(p, Cfg)
    args = p.parse_args(["--steps", "7", "--amp"])
    cfg = build_config(Cfg, args, config=f)
    assert cfg == Cfg(lr=0.5, steps=7, name="x", amp=True, milestones=(1, 2))
    assert build_config(Cfg, p.parse_args([])) == Cfg()
    f.write_text("lr = 0.5\nstep = 3\n")
    with pytest.raises(ConfigError, match="unknown option.*step.*valid options"):
        build_config(Cfg, None, config=f)
    with pytest.raises(ConfigError, match="neither a file nor a named config"):
        build_config(Cfg, None, config=tmp_path / "missing")


def test_metaoptnet_schedule_factors():
    f = [piecewise_lr_factor(e, (20, 40, 50), (1, 0.06, 0.012, 0.0024)) for e in (0, 19, 20, 39, 40, 50, 59)]
    assert f == [1, 1, 0.06, 0.06, 0.012, 0.0024, 0.0024]
    assert piecewise_lr_factor(0, (), (1.0,), warmup=5) == pytest.approx(0.2)


def test_optimizer_first_steps_by_hand():
    """One step on loss = p^2 from p = 1 (gradient 2 + weight decay * p), against the update rules."""
    lr, wd, mom = 0.1, 0.5, 0.9
    g = 2.0 + wd * 1.0
    expected = {
        "sgd": 1.0 - lr * (g + mom * g),  # Nesterov: g + momentum * buffer, buffer = g on the first step
        "adam": 1.0 - lr * g / (math.sqrt(g * g) + 1e-8),  # bias-corrected m / sqrt(v) = g / |g|
    }
    for name, value in expected.items():
        p = torch.ones(1, dtype=torch.float64, requires_grad=True)
        opt = build_optimizer(name, [p], lr, momentum=mom, weight_decay=wd, nesterov=True)
        (p * p).sum().backward()
        opt.step()
        assert p.item() == pytest.approx(value, abs=1e-12), name
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'; valid: sgd, adam"):
        build_optimizer("lamb", [p], lr)


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    atomic_torch_save({"x": torch.ones(1000)}, tmp_path / "last.pt")
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="last.pt is not a fewshot-sla checkpoint"):
        load_checkpoint(tmp_path / "last.pt")
