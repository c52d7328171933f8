"""The one training lifecycle (``fewshot_sla.engine.Trainer``): the LR schedule's unit in each
pipeline, the checkpoint's name for the step count, and a per-task weight-adapting learner (MAML)
plugged in as the training forward, against hand-written references."""

import copy
import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from test_meta_train_eval import DATA, tiny
from test_supervised_train import TEST, TRAIN, tiny_cfg
from torch import nn
from torch.func import functional_call

from fewshot_sla.engine import Trainer, checkpoint_step
from fewshot_sla.meta.train import train
from fewshot_sla.rundir import RunDir, load_checkpoint
from fewshot_sla.supervised import prepare_data, run_training


def _train_lrs(run):
    return [(r["step"], r["lr"]) for r in RunDir(run).read_metrics() if r["kind"] == "train"]


def test_meta_train_steps_the_lr_per_epoch_and_supervised_per_iteration(tmp_path):
    cfg = tiny(tmp_path, name="meta", epochs=2, lr_milestones=(1,), lr_factors=(1.0, 0.1), log_every=1)
    train(cfg, datasets=DATA)
    steps = cfg.steps_per_epoch  # 3 steps per epoch, x0.1 from the second epoch
    assert _train_lrs(tmp_path / "meta") == [(s, pytest.approx(0.05 * (1 if s <= steps else 0.1)))
                                             for s in range(1, 2 * steps + 1)]
    ckpt = load_checkpoint(tmp_path / "meta" / "last.pt")
    assert "iteration" not in ckpt and ckpt["step"] == checkpoint_step(ckpt) == 2 * steps and ckpt["epoch"] == 2

    cfg = tiny_cfg(tmp_path / "sup", iterations=4, eval_every=2, log_every=1, lr=0.1, lr_milestone_fractions=(0.5,),
                   lr_factors=(1.0, 0.1))
    run_training(cfg, data=prepare_data(TRAIN, TEST, cfg))
    assert _train_lrs(tmp_path / "sup") == [(1, 0.1), (2, 0.1), (3, pytest.approx(0.01)), (4, pytest.approx(0.01))]
    ckpt = load_checkpoint(tmp_path / "sup" / "last.pt")
    assert "step" not in ckpt and ckpt["iteration"] == checkpoint_step(ckpt) == 4


# ---------------------------------------------------------------- a MAML learner in the Trainer
@dataclass
class _Cfg:
    run_dir: str
    device: str = "cpu"
    num_threads: int = 0
    dist_timeout: float = 60.0
    sync_bn: bool = False
    deterministic: bool = False
    quiet: bool = True
    seed: int = 0
    channels_last: bool = False
    amp: str = "none"
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    log_every: int = 1


INNER_LR, TASKS = 0.5, 8  # 2 steps of 4 tasks, 2 chunks of 2 tasks each


def _tasks():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(4, 3, generator=g), torch.randint(0, 2, (4,), generator=g),
             torch.randn(4, 3, generator=g), torch.randint(0, 2, (4,), generator=g)) for _ in range(TASKS)]


class _Maml(nn.Module):
    """The training forward: one inner SGD step per task (torch.func), the adapted weights' query loss."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tasks):
        params = dict(self.model.named_parameters())
        losses = []
        for xs, ys, xq, yq in tasks:
            inner = F.cross_entropy(functional_call(self.model, params, (xs,)), ys)
            grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
            adapted = {k: p - INNER_LR * g for (k, p), g in zip(params.items(), grads)}
            losses.append(F.cross_entropy(functional_call(self.model, adapted, (xq,)), yq))
        return torch.stack(losses).mean()


class _MamlTrainer(Trainer):
    pipeline, dropout_stream = "meta", 9

    def load_data(self):
        self.tasks = _tasks()
        self.total = self.save_every = self.val_every = TASKS // 4

    def build_model(self):
        return nn.Linear(3, 2)

    def lr_schedule(self):
        return (), (1.0,), 0, 1

    def setup(self):
        self.best = {"score": -math.inf}

    def train_module(self):
        return _Maml(self.model)

    def chunks(self, step):
        return [(c, self.tasks[4 * step + 2 * c: 4 * step + 2 * c + 2]) for c in range(2)]

    def chunk_loss(self, module, tasks, chunk):
        loss = module(tasks) / 2  # two chunks: the step's loss is their mean
        return loss, {"loss": loss.detach()}


def test_a_maml_learner_trains_as_the_training_forward(tmp_path):
    trainer = _MamlTrainer(_Cfg(run_dir=str(tmp_path / "maml")))
    init = copy.deepcopy(trainer.model)
    w, b = (p.detach().clone().requires_grad_() for p in init.parameters())
    tasks = _tasks()
    for step in range(2):
        logged = trainer.train_step()
        outer = []
        for xs, ys, xq, yq in tasks[4 * step: 4 * step + 4]:  # hand-written MAML on explicit tensors
            gw, gb = torch.autograd.grad(F.cross_entropy(F.linear(xs, w, b), ys), (w, b), create_graph=True)
            outer.append(F.cross_entropy(F.linear(xq, w - INNER_LR * gw, b - INNER_LR * gb), yq))
        loss = torch.stack(outer).mean()
        dw, db = torch.autograd.grad(loss, (w, b))
        with torch.no_grad():
            w, b = (w - 0.1 * dw).requires_grad_(), (b - 0.1 * db).requires_grad_()
        assert logged["loss"].item() == pytest.approx(loss.item(), abs=1e-6)
        torch.testing.assert_close(trainer.model.weight, w, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(trainer.model.bias, b, rtol=1e-6, atol=1e-7)
    assert trainer.step == 2 and not torch.allclose(init.weight, trainer.model.weight, atol=1e-3)  # it learnt
