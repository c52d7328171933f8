"""One SLA+SD training step against the paper's trainer (hankook/SLA, ``trainers.py``,
``create_sla_sd_trainer``), transcribed below operation by operation: rotate with
``stack(..., 1).view``, joint labels ``y*n + i``, ``single_preds[::n]``, the aggregated teacher
``sum_i joint[i::n, i::n] / n`` (detached), ``kl_div(log_softmax(u/T), softmax(s/T), 'batchmean')``,
``loss = joint + single + T^2 * kl``, then plain ``torch.optim.SGD(lr, momentum=0.9,
weight_decay)`` and ``MultiStepLR([iterations // 2, iterations * 3 // 4])`` stepped every
iteration. Our trainer's steps must give the same losses and the same weights.

Also ``--sd-start``: before it the step is the paper's loss without the distillation term."""

import copy

import pytest
import torch
import torch.nn.functional as F
from test_supervised_train import TEST, TRAIN, tiny_cfg

from fewshot_sla.supervised import prepare_data
from fewshot_sla.supervised.train import SupervisedTrainer


def paper_step(model, optimizer, images, single_labels, T, with_distill=True):
    """hankook/SLA's ``_update`` for ``sla+sd`` with the ``rotation`` augmentation."""
    model.train(True)
    size = images.shape[1:]
    images = torch.stack([torch.rot90(images, k, (2, 3)) for k in range(4)], 1).view(-1, *size)
    n = 4
    out = model(images)
    joint_preds, single_preds = out["joint"], out["class"]
    single_preds = single_preds[::n]
    joint_labels = torch.stack([single_labels * n + i for i in range(n)], 1).view(-1)
    joint_loss = F.cross_entropy(joint_preds, joint_labels)
    single_loss = F.cross_entropy(single_preds, single_labels)
    agg_preds = 0
    for i in range(n):
        agg_preds = agg_preds + joint_preds[i::n, i::n] / n
    distillation_loss = F.kl_div(F.log_softmax(single_preds / T, 1), F.softmax(agg_preds.detach() / T, 1),
                                 reduction="batchmean")
    loss = joint_loss + single_loss + (distillation_loss.mul(T ** 2) if with_distill else 0)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _trainer(tmp_path, **kw):
    cfg = tiny_cfg(tmp_path / "run", mode="sla+sd", transforms="rotation", augment="none", iterations=4,
                   eval_every=4, **kw)
    return SupervisedTrainer(cfg, prepare_data(TRAIN, TEST, cfg))


def _paper_steps(trainer, steps, T, sd_start=0):
    ref = copy.deepcopy(trainer.model)
    cfg = trainer.cfg
    opt = torch.optim.SGD(ref.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    n = cfg.iterations
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [n // 2, n * 3 // 4])
    losses = []
    for it in range(steps):
        idx = trainer.plan.global_batch(it)
        x = trainer.train_aug(trainer.train_images[idx], generator=torch.Generator())  # augment none: normalise only
        losses.append(paper_step(ref, opt, x, trainer.train_labels[idx], T, with_distill=it >= sd_start))
        sched.step()
    return ref, losses


def _our_steps(trainer, steps):
    """Run our trainer's first ``steps`` iterations; each one's logged total loss."""
    trainer.model.train()
    return [float(trainer.train_step()["loss"]) for _ in range(steps)]


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_sla_sd_steps_equal_the_papers_trainer(tmp_path, T):
    trainer = _trainer(tmp_path, sd_temperature=T)
    assert trainer.cfg.nesterov is False
    ref, losses = _paper_steps(trainer, 4, T)
    ours = _our_steps(trainer, 4)
    assert ours == pytest.approx(losses, rel=1e-5)
    for (name, p), q in zip(trainer.model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    init = _trainer(tmp_path / "again", sd_temperature=T).model
    assert any(not torch.equal(p, q) for p, q in zip(init.parameters(), trainer.model.parameters(), strict=True))


def test_sd_start_drops_the_distillation_term_until_its_iteration(tmp_path):
    trainer = _trainer(tmp_path, sd_temperature=2.0, sd_start=0.5)
    assert trainer.sched.sd_start == 2
    ref, losses = _paper_steps(trainer, 4, 2.0, sd_start=2)
    ours = _our_steps(trainer, 4)
    assert ours == pytest.approx(losses, rel=1e-5)
    for p, q in zip(trainer.model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
