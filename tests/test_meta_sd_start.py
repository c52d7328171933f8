"""meta-train ``--mode sla+sd --sd-start F``: the distillation term joins the loss at step
``round(F * steps)``; before it the loss is ``L_SLA + beta * CE`` alone.

The reference is a hand-written ProtoNet SLA+SD step on the trainer's own episodes: rotations
stacked with ``torch.rot90``, joint labels ``y*4 + k``, the aggregated teacher as the diagonal
mean of the joint logits, and ``torch.nn.functional``'s cross-entropy and ``kl_div``; only the
backbone and the ProtoNet head (``model.embed``/``model.classify``) are the package's.
"""

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from synthetic import synthetic_dataset

import fewshot_sla.meta.train as mt
from fewshot_sla.config import ConfigError
from fewshot_sla.meta.config import MetaTrainConfig

TRAIN = synthetic_dataset(8, 10, 16, 1, seed=0)
M = 4


def _config(tmp_path, **kw):
    base = dict(
        dataset="synthetic", backbone="conv4", backbone_options={"hidden": 8, "out_channels": 8},
        head="protonet", mode="sla+sd", transforms="rotation", n_way=3, k_shot=2, n_query=2,
        episodes_per_epoch=8, tasks_per_batch=2, val_episodes=0, epochs=1, lr=0.05, lr_milestones=(),
        lr_factors=(1.0,), sd_temperature=2.0, sd_beta=0.5, run_dir=str(tmp_path / "run"), quiet=True,
        device="cpu", test_episodes=0,
    )
    base.update(kw)
    return MetaTrainConfig(**base)


def _rotations(x):
    """``[T, S, C, H, W]`` -> ``[T, S*4, C, H, W]``, row ``s*4 + k`` = ``rot90^k`` of image s."""
    return torch.stack([torch.rot90(x, k, dims=(-2, -1)) for k in range(M)], dim=2).flatten(1, 2)


def _reference_loss(model, batch, T, beta, with_distill):
    n, (t, s), q = batch.n_way, batch.support_labels.shape, batch.query_labels.shape[1]
    ys, yq = batch.support_labels, batch.query_labels
    fs, fq = model.embed(_rotations(batch.support), _rotations(batch.query))
    k = torch.arange(M)
    joint = model.classify(fq, fs, (ys[..., None] * M + k).flatten(1), n * M)  # [T, Q*4, N*4]
    l_sla = F.cross_entropy(joint.flatten(0, 1), (yq[..., None] * M + k).flatten())
    # teacher: mean over k of joint[q*4 + k, c*4 + k]
    teacher = joint.reshape(t, q, M, n, M).diagonal(dim1=2, dim2=4).mean(-1).detach()
    d = fs.shape[-1]
    u = model.classify(fq.reshape(t, q, M, d)[:, :, 0], fs.reshape(t, s, M, d)[:, :, 0], ys, n, distill=True)
    ce = F.cross_entropy(u.flatten(0, 1), yq.flatten())
    kl = F.kl_div(F.log_softmax(u / T, -1).flatten(0, 1), F.softmax(teacher / T, -1).flatten(0, 1),
                  reduction="batchmean") * T * T
    return l_sla + beta * ce + kl if with_distill else l_sla + beta * ce


def _max_diff(a, b):
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize("sd_start,first_distilled", [(0.0, 0), (0.5, 2), (0.6, 2), (0.7, 3)])
def test_sd_start_matches_a_hand_written_sla_sd_step(tmp_path, monkeypatch, sd_start, first_distilled):
    cfg = _config(tmp_path, sd_start=sd_start)
    trainer = mt.MetaTrainer(cfg, datasets={"train": TRAIN})
    assert trainer.sd_start_step == first_distilled
    ref = copy.deepcopy(trainer.model)
    opt = torch.optim.SGD(ref.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                          weight_decay=cfg.weight_decay)
    always = copy.deepcopy(ref)  # distils from step 0 (the paper): must differ when sd_start > 0
    opt_always = torch.optim.SGD(always.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                 weight_decay=cfg.weight_decay)
    batches = []
    real = mt.load_batch
    monkeypatch.setattr(mt, "load_batch", lambda *a, **k: batches.append(real(*a, **k)) or batches[-1])
    trainer.model.train()
    ref.train()
    always.train()
    for step in range(4):
        logged = trainer.train_step()
        batch = batches[-1]
        for model, optim, distill in ((ref, opt, step >= first_distilled), (always, opt_always, True)):
            optim.zero_grad()
            loss = _reference_loss(model, batch, cfg.sd_temperature, cfg.sd_beta, distill)
            loss.backward()
            optim.step()
            if model is ref:
                assert logged["loss"].item() == pytest.approx(loss.item(), rel=1e-5, abs=1e-6), step
        assert _max_diff(trainer.model.state_dict(), ref.state_dict()) < 1e-6, step
    gap = _max_diff(trainer.model.state_dict(), always.state_dict())
    assert gap < 1e-6 if first_distilled == 0 else gap > 1e-4


@pytest.mark.parametrize("kw,message", [
    (dict(sd_start=1.0), "--sd-start must be in [0, 1)"),
    (dict(sd_start=-0.1), "--sd-start must be in [0, 1)"),
    (dict(mode="sla", sd_start=0.5), "--sd-start is the distillation warm-up of --mode sla+sd"),
])
def test_bad_sd_start_is_refused(tmp_path, kw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _config(tmp_path, **kw)
