"""``--accumulate`` against a hand-written reference of one optimiser step.

tests/test_distributed.py checks that K torchrun processes equal one process with
``--accumulate K``; this file checks ``--accumulate`` itself against something that shares
none of the trainer's loop. Documented semantics (fewshot_sla/meta/train.py, batches.step_chunks,
MetaTrainConfig.accumulate): the step's T episodes split into G chunks, episode i in chunk
``i mod G``; each chunk is one forward in train mode (BatchNorm normalises with the chunk's own
statistics); the step's gradient is that of the mean of the chunk losses; only the first chunk
updates the BatchNorm running statistics; the logged loss is the mean over chunks.

The reference below builds the same initial model (``seed_everything(seed)`` then
``build_model``, as the trainer does), computes every chunk's ProtoNet loss by hand (backbone ->
features -> class means -> -scale * squared distance -> cross-entropy), differentiates the mean
with ``torch.autograd.grad`` and applies torch.optim.SGD's first step by hand (momentum buffer =
d_p, Nesterov, L2 weight decay). Baseline mode, conv4 (no dropout), no augmentation: the only
randomness is the episode choice.
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from synthetic import synthetic_dataset

from fewshot_sla.data.spec import ImageSpec
from fewshot_sla.episodes import EpisodeSampler
from fewshot_sla.meta.config import MetaTrainConfig
from fewshot_sla.meta.model import build_model
from fewshot_sla.meta.train import train
from fewshot_sla.rundir import RunDir, load_checkpoint

TRAIN = synthetic_dataset(8, 10, 16, 1, seed=0)
N_WAY, K_SHOT, N_QUERY, T = 3, 2, 3, 4
LR, MOMENTUM, WD = 0.1, 0.9, 5e-3


def _assert_close(got, want, name, rel=2e-5):
    """Equal up to float32 rounding, relative to the tensor's largest entry (the trainer and the
    reference sum in other orders: BatchNorm over a whole chunk, the chunks' gradients)."""
    err, size = float((got - want).abs().max()), float(want.abs().max())
    assert err <= rel * size + 1e-8, (name, err, size)


def _config(tmp_path) -> MetaTrainConfig:
    # one epoch of exactly one step (episodes_per_epoch == tasks_per_batch), no validation
    return MetaTrainConfig(
        dataset="synthetic", backbone="conv4", backbone_options={"hidden": 8, "out_channels": 8},
        head="protonet", mode="baseline", augment="none", n_way=N_WAY, k_shot=K_SHOT, n_query=N_QUERY,
        episodes_per_epoch=T, tasks_per_batch=T, accumulate=2, epochs=1, val_episodes=0,
        optimizer="sgd", lr=LR, momentum=MOMENTUM, weight_decay=WD, nesterov=True,
        lr_milestones=(), lr_factors=(1.0,), log_every=1, seed=3, run_dir=str(tmp_path / "run"),
        quiet=True, device="cpu", test_episodes=0,
    )


def _reference_step(cfg, chunks, mean, std):
    """Weights, momentum buffers, BN buffers and chunk losses after one hand-computed step."""
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)  # the trainer: seed_everything(cfg.seed); build_model(...)
        model = build_model(cfg, TRAIN.channels, TRAIN.image_size)
    model.train()
    pre = ImageSpec(TRAIN.channels, TRAIN.image_size, mean, std).normalise
    sampler = EpisodeSampler(TRAIN.labels, N_WAY, K_SHOT, N_QUERY, T, seed=cfg.seed)
    s, q = N_WAY * K_SHOT, N_WAY * N_QUERY
    query_labels = torch.arange(N_WAY).repeat_interleave(N_QUERY)
    losses = []
    for c, episodes in enumerate(chunks):
        idx = [sampler.episode(e) for e in episodes]  # per episode: support class by class, then queries
        x = pre(TRAIN.images[torch.tensor(idx).flatten()])  # every image of the chunk: one forward
        saved = {n: b.clone() for n, b in model.named_buffers()}
        feats = model.backbone(x).reshape(len(episodes), s + q, -1)
        if c > 0:  # only the first chunk updates the running statistics: put the old ones back
            for n, b in saved.items():  # (new tensors: autograd saved the updated ones)
                module, _, attr = n.rpartition(".")
                setattr(model.get_submodule(module), attr, b)
        logits, labels = [], []
        for f in feats:
            protos = f[:s].reshape(N_WAY, K_SHOT, -1).mean(1)  # [N, D]
            d2 = (f[s:, None, :] - protos[None]).pow(2).sum(-1)  # [Q, N]
            logits.append(-model.scale * d2)
            labels.append(query_labels)
        losses.append(F.cross_entropy(torch.cat(logits), torch.cat(labels)))  # mean over the chunk's queries
    names, params = zip(*model.named_parameters())
    grads = torch.autograd.grad(torch.stack(losses).mean(), params)
    weights, buffers = {}, {}
    for n, p, g in zip(names, params, grads):
        d_p = g + WD * p.detach()  # L2 weight decay
        buffers[n] = d_p.clone()  # first step: momentum buffer = d_p
        weights[n] = p.detach() - LR * (d_p + MOMENTUM * buffers[n])  # Nesterov
    bn = {n: b.clone() for n, b in model.named_buffers()}
    return weights, buffers, bn, [v.item() for v in torch.stack(losses).detach()]


def test_first_step_with_accumulate_2_equals_a_hand_written_reference(tmp_path):
    cfg = _config(tmp_path)
    train(cfg, datasets={"train": TRAIN})
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["step"] == 1
    mean, std = ckpt["data"]["mean"], ckpt["data"]["std"]
    chunks = [[i for i in range(T) if i % 2 == g] for g in range(2)]  # [[0, 2], [1, 3]]
    weights, buffers, bn, losses = _reference_step(cfg, chunks, mean, std)

    state = ckpt["model"]
    assert set(weights) | set(bn) == set(state)
    for n, w in weights.items():
        _assert_close(state[n], w, n)
    opt_state = ckpt["optimizer"]["state"]
    for i, n in enumerate(weights):  # model.parameters() order, the optimiser's
        _assert_close(opt_state[i]["momentum_buffer"], buffers[n], n)
    for n, b in bn.items():  # running statistics of the first chunk only; num_batches_tracked == 1
        _assert_close(state[n].float(), b.float(), n)
    assert int(state["backbone.encoder.1.num_batches_tracked"]) == 1

    records = [r for r in RunDir(cfg.run_dir).read_metrics() if r["kind"] == "train"]
    assert len(records) == 1 and records[0]["step"] == 1 and records[0]["steps"] == 1
    assert abs(losses[0] - losses[1]) > 1e-3  # the mean is not either chunk's loss
    assert records[0]["loss"] == pytest.approx(sum(losses) / 2, rel=1e-6)

    # the comparison can tell the documented chunking from the alternatives: one chunk of all T
    # episodes (BatchNorm over the whole step) or contiguous chunks give other weights
    for other in ([list(range(T))], [[0, 1], [2, 3]]):
        w_other = _reference_step(cfg, other, mean, std)[0]
        gap = max(float((state[n] - w).abs().max()) for n, w in w_other.items())
        assert gap > 1e-3, (other, gap)


# ------------------------------------------------------------------------ DropBlock's ramp
def test_dropblock_ramp_counts_optimiser_steps_whatever_accumulate(tmp_path, monkeypatch):
    """ResNet-12's DropBlock rate ramps over ``drop_ramp_steps`` training forwards
    (backbones/resnet12.py: ``drop = min(p * t / T, p)``, t = 1 on the first). With
    ``--accumulate 2`` one step is two forwards, yet the ramp must count steps: every chunk of
    step s (0-based) uses t = s + 1, as one process per chunk (torchrun) does, and the
    checkpointed counter equals the number of steps."""
    from fewshot_sla.backbones.dropblock import DropBlock

    p, ramp, steps = 0.5, 4, 3
    seen = []
    forward = DropBlock.forward

    def recording(self, x, drop_prob):
        seen.append(float(drop_prob))
        return forward(self, x, drop_prob)

    monkeypatch.setattr(DropBlock, "forward", recording)
    cfg = dataclasses.replace(
        _config(tmp_path), backbone="resnet12", mode="sla", transforms="rotation", episodes_per_epoch=T * steps,
        backbone_options={"widths": [4, 4, 4, 4], "drop_rate": p, "drop_ramp_steps": ramp})
    train(cfg, datasets={"train": TRAIN})
    # per step: 2 chunks x (layer3, layer4), each at the step's t
    want = [min(p * (s + 1) / ramp, p) for s in range(steps) for _ in range(2 * 2)]
    assert seen == pytest.approx(want, rel=1e-6)
    state = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    counters = {k: int(v) for k, v in state.items() if k.endswith("drop_step")}
    assert len(counters) == 4 and set(counters.values()) == {steps}, counters
