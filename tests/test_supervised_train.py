"""Supervised pipelines end to end on tiny synthetic data: batch plan, schedules, DRW,
data preparation, every mode and loss, exact resume, evaluation, ensembles and the CLI."""

import importlib.util
import json
import math
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from fewshot_sla.config import ConfigError, build_config
from fewshot_sla.data.spec import ImageSpec
from fewshot_sla.engine import load_model
from fewshot_sla.inferences import reported
from fewshot_sla.optim import piecewise_lr_factor
from fewshot_sla.rundir import load_checkpoint
from fewshot_sla.supervised import SupervisedConfig, evaluate_checkpoints, prepare_data, run_training
from fewshot_sla.supervised.data import preprocessors
from fewshot_sla.supervised.evaluate import predict
from fewshot_sla.supervised.longtail import class_counts, longtail_counts
from fewshot_sla.supervised.losses import class_balanced_weights
from fewshot_sla.supervised.model import build_model
from fewshot_sla.supervised.train import BatchPlan, class_weight_schedule, make_schedule
from fewshot_sla.transforms import get_transform_set


@dataclass
class DS:
    images: torch.Tensor
    labels: torch.Tensor
    class_names: list


def synth(n_per: int, C: int = 4, size: int = 16, seed: int = 0) -> DS:
    """Class-dependent colour patterns plus noise, uint8 [C*n_per, 3, size, size]."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(C).repeat_interleave(n_per)
    base = torch.randint(0, 256, (C, 3, size, size), generator=torch.Generator().manual_seed(99))
    noise = torch.randint(-40, 40, (len(labels), 3, size, size), generator=g)
    return DS((base[labels] + noise).clamp(0, 255).to(torch.uint8), labels, [f"c{i}" for i in range(C)])


TRAIN, TEST = synth(30), synth(10, seed=1)
TINY = {"backbone": "conv4", "backbone_options": "hidden=4,out_channels=4", "batch_size": 8,
        "quiet": True, "plot": False, "device": "cpu"}


def tiny_cfg(out, **kw) -> SupervisedConfig:
    base = {**TINY, "iterations": 4, "eval_every": 2, "log_every": 2, "run_dir": str(out)}
    if kw.get("imbalance_ratio", 1.0) == 1.0:  # long-tailed runs have no validation set
        base["val_size"] = 8
    return SupervisedConfig(**{**base, **kw})


# ---------------------------------------------------------------------------- sampling and schedules
def test_batch_plan_is_pure_and_shards_the_global_batch():
    plan = BatchPlan(100, 16, seed=3)
    b5 = plan.batch_indices(5)
    _ = [plan.batch_indices(i) for i in range(10)]  # calling order does not matter
    assert torch.equal(plan.batch_indices(5), b5)
    assert torch.equal(BatchPlan(100, 16, seed=3).batch_indices(5), b5)
    assert len(set(b5.tolist())) == 16 and not torch.equal(plan.batch_indices(6), b5)
    assert not torch.equal(BatchPlan(100, 16, seed=4).batch_indices(5), b5)
    shards = [plan.batch_indices(5, rank=r, world=3) for r in range(3)]
    assert torch.equal(torch.cat(shards), b5) and [len(s) for s in shards] == [6, 5, 5]
    ep = BatchPlan(50, 16, seed=0, epoch_based=True)
    assert ep.iterations_per_epoch == 4
    epoch0 = [ep.batch_indices(i) for i in range(4)]
    assert [len(b) for b in epoch0] == [16, 16, 16, 2]
    assert sorted(torch.cat(epoch0).tolist()) == list(range(50))  # one pass, no repeats
    assert not torch.equal(torch.cat(epoch0), torch.cat([ep.batch_indices(i) for i in range(4, 8)]))
    with pytest.raises(ValueError, match="exceeds"):
        BatchPlan(10, 16)


def lr_factor(s, it):
    """The lr factor of iteration ``it`` under schedule ``s``, as the trainer's scheduler computes it."""
    return piecewise_lr_factor(it, s.milestones, s.factors, s.warmup, s.warmup_unit)


def test_long_tailed_schedule_is_ldam_drw_recipe():
    cfg = build_config(SupervisedConfig, {}, config="supervised_cifar10_lt100")
    assert (cfg.epochs, cfg.weight_decay, cfg.val_size, cfg.batch_size) == (200, 2e-4, 0, 128)
    s = make_schedule(cfg, 12406)
    ipe = 97  # ceil(12406 / 128)
    assert s.iterations_per_epoch == ipe and s.total == 200 * ipe
    assert s.milestones == (160 * ipe, 180 * ipe) and s.drw_start == 160 * ipe and s.warmup == 5 * ipe

    def ldam_lr(epoch):  # LDAM-DRW's adjust_learning_rate (per epoch), as a factor of lr
        e = epoch + 1
        return e / 5 if e <= 5 else (1e-4 if e > 180 else (1e-2 if e > 160 else 1.0))

    for epoch in (5, 100, 159, 160, 179, 180, 199):
        f = piecewise_lr_factor(epoch * ipe, s.milestones, s.factors, s.warmup)
        assert f == pytest.approx(ldam_lr(epoch)), epoch
    # the lr of every iteration is LDAM-DRW's for its epoch: warm-up per epoch, lr/5 throughout epoch 0
    got = [lr_factor(s, it) for it in range(s.total)]
    assert got == pytest.approx([ldam_lr(it // ipe) for it in range(s.total)])
    assert got[0] == got[ipe - 1] == pytest.approx(0.2) and got[ipe] == pytest.approx(0.4)
    std = make_schedule(SupervisedConfig(), 45000)
    assert std.total == 80000 and std.milestones == (40000, 60000) and std.warmup == 0
    # a per-iteration warm-up stays available: iteration k < W runs at (k + 1) / W
    it_warm = make_schedule(cfg.replace(warmup_by="iteration"), 12406)
    assert it_warm.warmup == 485 and [lr_factor(it_warm, k) for k in (0, 96, 484, 485)] == pytest.approx(
        [1 / 485, 97 / 485, 1.0, 1.0])
    with pytest.raises(ConfigError, match="--epochs"):
        SupervisedConfig(warmup_by="epoch")


@pytest.mark.parametrize("name", ["supervised_cifar10_lt100", "supervised_cifar10_lt10", "supervised_cifar100_lt100",
                                  "supervised_cifar100_lt10"])
def test_long_tailed_configs_normalise_as_ldam_drw(name):
    cfg = build_config(SupervisedConfig, {}, config=name)
    assert (cfg.warmup_by, cfg.momentum, cfg.nesterov, cfg.lr, cfg.lr_factors) == ("epoch", 0.9, False, 0.1,
                                                                                     (1.0, 0.01, 0.0001))
    train_aug, pre = preprocessors(cfg, 32)
    c = train_aug.config
    assert (c.crop, c.padding, c.flip) == (32, 4, True)
    # transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)) of LDAM-DRW's cifar_train.py
    x = torch.tensor([[[[0]], [[128]], [[255]]]], dtype=torch.uint8)
    ref = [(0 / 255 - 0.4914) / 0.2023, (128 / 255 - 0.4822) / 0.1994, (255 / 255 - 0.4465) / 0.2010]
    assert pre(x).flatten().tolist() == pytest.approx(ref, rel=1e-5)
    assert preprocessors(SupervisedConfig(), 32)[1].config.std == (0.5, 0.5, 0.5)  # the SLA code's


def test_training_uses_the_per_epoch_warm_up(tmp_path):
    # 52 long-tailed images (30, 13, 6, 3), batch 8: 7 iterations per epoch; the lr logged at every step
    cfg = tiny_cfg(tmp_path, imbalance_ratio=10.0, epochs=4, warmup=0.5, warmup_by="epoch",
                   lr_milestone_fractions=(0.75,), lr_factors=(1.0, 0.01), log_every=1, eval_every=4, lr=0.2)
    run_training(cfg, data=prepare_data(TRAIN, TEST, cfg))
    lrs = [r["lr"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
           if r["kind"] == "train"]
    epoch_lr = {0: 0.2 / 2, 1: 0.2, 2: 0.2, 3: 0.2 * 0.01}  # (e+1)/W for e < W = 2, then x0.01 from epoch 3
    assert lrs == pytest.approx([epoch_lr[i // 7] for i in range(28)])


def test_drw_weights_switch_on_at_drw_start():
    counts = [30, 10, 3]
    w = class_balanced_weights(counts, 0.9999)
    drw = class_weight_schedule(SupervisedConfig(loss="ldam", drw=True), counts, drw_start=7)
    assert drw(0) is None and drw(6) is None and torch.equal(drw(7), w) and torch.equal(drw(100), w)
    cb = class_weight_schedule(SupervisedConfig(loss="cb"), counts, drw_start=7)
    assert torch.equal(cb(0), w)
    assert class_weight_schedule(SupervisedConfig(loss="ldam"), counts, 7)(50) is None


def test_prepare_data_holds_out_val_or_subsamples_the_tail():
    cfg = SupervisedConfig(val_size=8, split_seed=1)
    data = prepare_data(TRAIN, TEST, cfg)
    assert class_counts(data.val_labels, 4) == [2, 2, 2, 2] and data.class_counts == [28] * 4
    # validation images are not training images (rows are distinct thanks to the noise)
    train_rows = {bytes(x.numpy()) for x in data.train_images}
    assert not any(bytes(x.numpy()) in train_rows for x in data.val_images)
    again = prepare_data(TRAIN, TEST, cfg)
    assert torch.equal(again.train_images, data.train_images)
    with pytest.raises(ConfigError, match="val-size"):
        prepare_data(TRAIN, TEST, SupervisedConfig(val_size=2))
    # long-tailed: cut from the full training set (n_max = 30), no validation set
    lt = prepare_data(TRAIN, TEST, SupervisedConfig(imbalance_ratio=10.0))
    assert lt.class_counts == [30, 13, 6, 3] == class_counts(lt.train_labels, 4) and len(lt.val_labels) == 0


@pytest.mark.parametrize("C, ratio, published", [
    (10, 100, [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]),  # Cao et al., CIFAR-10-LT, total 12,406
    (10, 10, 20431), (100, 100, 10847), (100, 10, 19573),
])
def test_imbalance_ratio_alone_gives_the_published_counts(C, ratio, published):
    n_per = 50000 // C  # a full CIFAR training set's labels (images are 1x1 to stay small)
    labels = torch.from_numpy(np.random.default_rng(0).permutation(np.repeat(np.arange(C), n_per)))
    train = DS(torch.zeros(len(labels), 1, 1, 1, dtype=torch.uint8), labels, [str(c) for c in range(C)])
    test = DS(torch.zeros(C, 1, 1, 1, dtype=torch.uint8), torch.arange(C), train.class_names)
    data = prepare_data(train, test, SupervisedConfig(dataset=f"cifar{C}", imbalance_ratio=float(ratio)))
    counts = class_counts(data.train_labels, C)
    assert data.class_counts == counts and len(data.val_labels) == 0
    if isinstance(published, list):
        assert counts == published and sum(counts) == 12406
    else:
        assert sum(counts) == published and counts[0] == n_per
    # balanced runs keep the 5,000-image validation hold-out by default
    bal = prepare_data(train, test, SupervisedConfig(dataset=f"cifar{C}"))
    assert (len(bal.val_labels), len(bal.train_labels)) == (5000, 45000)


def test_val_size_defaults_and_long_tailed_refusal():
    assert SupervisedConfig().validation_size == 5000 and SupervisedConfig(val_size=0).validation_size == 0
    assert SupervisedConfig(imbalance_ratio=100.0).validation_size == 0
    assert SupervisedConfig(imbalance_ratio=100.0, val_size=0).validation_size == 0
    with pytest.raises(ConfigError, match="drop --val-size"):
        SupervisedConfig(imbalance_ratio=100.0, val_size=5000)
    with pytest.raises(ConfigError, match="supervised_<dataset>_lt<R>"):  # the standard config + a ratio
        build_config(SupervisedConfig, {"imbalance_ratio": 100.0}, config="supervised_cifar10")
    assert SupervisedConfig().data_root == "data"


# ---------------------------------------------------------------------------- end to end
CASES = [
    ("baseline", {}, {"Baseline"}),
    ("da", {}, {"DA"}),
    ("mt", {"transforms": "rotation2"}, {"MT"}),
    ("sla", {"large_loss": True}, {"SLA+SI", "SLA+AG"}),
    ("sla+sd", {"transforms": "color_perm3"}, {"SLA+SD"}),
    ("baseline", {"loss": "cb", "imbalance_ratio": 10.0, "val_size": 0}, {"CB-RW"}),
    ("sla+sd", {"loss": "cb", "imbalance_ratio": 10.0, "plot": True, "iterations": 6}, {"CB-RW + SLA+SD"}),
    ("baseline", {"loss": "ldam", "drw": True, "imbalance_ratio": 10.0, "val_size": 0, "epochs": 2,
                  "drw_start": 0.5, "warmup": 0.25, "eval_every": 1}, {"LDAM-DRW"}),
    ("sla+sd", {"loss": "ldam", "drw": True, "imbalance_ratio": 10.0, "val_size": 0, "epochs": 2,
                "drw_start": 0.5, "joint_loss": "same", "eval_test": True, "eval_every": 1}, {"LDAM-DRW + SLA+SD"}),
    ("mt", {"loss": "ldam", "imbalance_ratio": 10.0}, {"LDAM + MT"}),
]


@pytest.mark.parametrize("mode, extra, table", CASES, ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(CASES)])
def test_every_mode_and_loss_end_to_end(tmp_path, mode, extra, table):
    cfg = tiny_cfg(tmp_path / "run", mode=mode, **extra)
    data = prepare_data(TRAIN, TEST, cfg)
    summary = run_training(cfg, data=data)
    assert set(summary["table"]) == table
    assert summary["primary"] == reported("supervised", mode)
    acc = summary["test"]["accuracy"]
    expected = {"baseline": {"single"}, "da": {"single", "aggregated"}, "mt": {"single", "aggregated", "transform"},
                "sla": {"single", "aggregated", "joint"}, "sla+sd": {"single", "aggregated", "joint", "distilled"}}
    assert set(acc) == expected[mode]
    # the summary's test accuracy is reproduced by reloading best.pt (an independent path)
    rep = evaluate_checkpoints([str(tmp_path / "run" / "best.pt")], data=data)
    assert rep["accuracy"] == pytest.approx(acc)
    assert rep["table"] == pytest.approx(summary["table"])
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in records if r["kind"] == "train"]
    assert train_recs and all(np.isfinite(r["loss"]) for r in train_recs)
    n_train = len(data.train_labels)
    per_epoch = -(-n_train // cfg.batch_size) if cfg.epochs else n_train / cfg.batch_size
    assert all(r["epoch"] == pytest.approx(r["step"] / per_epoch) for r in train_recs)
    vals = [r for r in records if r["kind"] == "val"]
    if cfg.val_size:  # model selection: the first step with the highest primary validation accuracy
        assert vals and all(r["score"] == r[f"acc_{reported('supervised', mode)}"] for r in vals)
        best = max(vals, key=lambda r: (r["score"], -r["step"]))
        assert summary["best_iteration"] == best["step"]
        assert summary["val"] == pytest.approx({k[4:]: v for k, v in best.items() if k.startswith("acc_")})
    if cfg.long_tailed:
        assert summary["class_counts"] == longtail_counts(30, 4, 10.0) and len(data.val_labels) == 0
        groups = summary["test"]["groups"][reported("supervised", mode)]
        per_class = summary["test"]["per_class"][reported("supervised", mode)]
        assert groups["overall"] == pytest.approx(float(np.mean(per_class)))
        # counts (30, 13, 6, 3): no many-shot class (> 100), one medium, three few (< 20)
        assert groups["many"] is None and groups["medium"] == pytest.approx(per_class[0])
        assert groups["few"] == pytest.approx(float(np.mean(per_class[1:])))
    if cfg.val_size == 0:
        assert summary["best_iteration"] == summary["total_iterations"]  # the last checkpoint
    if cfg.plot and importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "run" / "curves.png").stat().st_size > 0  # drawn by the meta side's plotter
    if cfg.eval_test:
        assert any(r["kind"] == "test" and not r.get("final") for r in records)


@pytest.mark.parametrize("augment, grey", [("sla", False), ("standard", False), ("ldam", False), ("standard", True)])
def test_image_spec_of_a_checkpoint_normalises_as_its_validation(tmp_path, augment, grey):
    """``evaluate_checkpoints`` normalises with the checkpoint's ImageSpec: the tensors of the run's own
    validation normaliser (``preprocessors`` with the data's channels and images; grey images of an RGB
    dataset use their own statistics) and, for the dataset's registered channels, of the old path
    (``preprocessors(cfg, size)``: the registered statistics); and ``(x / 255 - mean) / std`` by hand."""
    train_ds = DS(TRAIN.images[:, :1].contiguous(), TRAIN.labels, TRAIN.class_names) if grey else TRAIN
    cfg = tiny_cfg(tmp_path, augment=augment, iterations=2)
    data = prepare_data(train_ds, train_ds, cfg)
    run_training(cfg, data=data)
    loaded = load_model(tmp_path)
    spec, x = ImageSpec.from_checkpoint(loaded.data, loaded.config), data.val_images
    validation = preprocessors(cfg, 16, data.channels, data.train_images)[1]
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (validation.config.mean, validation.config.std))
    assert torch.equal(spec.normalise(x), validation(x))
    assert torch.equal(spec.normalise(x), (x.float() / 255 - mean) / std)
    if not grey:
        assert torch.equal(spec.normalise(x), preprocessors(cfg, 16)[1](x))


def test_resume_equals_uninterrupted(tmp_path):
    kw = {"mode": "sla+sd", "iterations": 8, "eval_every": 4, "log_every": 3}
    data = prepare_data(TRAIN, TEST, tiny_cfg(tmp_path / "x", **kw))
    straight = run_training(tiny_cfg(tmp_path / "a", **kw), data=data)
    stopped = run_training(tiny_cfg(tmp_path / "b", stop_after=5, **kw), data=data)
    assert stopped["stopped_at"] == 5 and not (tmp_path / "b" / "summary.json").exists()
    resumed = run_training(tiny_cfg(tmp_path / "b", **kw), data=data, resume=True)
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in "ab")
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["iteration"] == b["iteration"] == 8

    def metrics(d):
        lines = (tmp_path / d / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k != "time"} for x in lines]

    assert metrics("a") == metrics("b")
    assert straight["test"] == resumed["test"] and straight["best_iteration"] == resumed["best_iteration"]
    with pytest.raises(ConfigError, match="--resume"):
        run_training(tiny_cfg(tmp_path / "a", **kw), data=data)  # refuses to overwrite a run


def test_ensemble_averages_the_primary_logits(tmp_path):
    data = prepare_data(TRAIN, TEST, tiny_cfg(tmp_path))
    ckpts = []
    for i, (mode, tr) in enumerate([("baseline", "auto"), ("sla+sd", "rotation")]):
        run_training(tiny_cfg(tmp_path / f"r{i}", mode=mode, transforms=tr, seed=i), data=data)
        ckpts.append(str(tmp_path / f"r{i}" / "best.pt"))
    rep = evaluate_checkpoints(ckpts, data=data)
    logits = []
    for c in ckpts:
        loaded = load_model(c)  # the one loader of either pipeline's checkpoints
        model, meta, cfg = loaded.model, loaded.data, loaded.config
        assert loaded.pipeline == "supervised" and isinstance(cfg, SupervisedConfig)
        pred = predict(model, data.test_images, data.test_labels, get_transform_set(meta["transforms"]),
                       preprocessors(cfg, 16)[1])
        logits.append(pred.logits[reported("supervised", cfg.mode)])
    ref = ((logits[0] + logits[1]) / 2).argmax(-1).eq(data.test_labels).float().mean()
    assert rep["accuracy"]["ensemble"] == pytest.approx(float(ref))
    assert rep["table"] == {"Ensemble of 2": rep["accuracy"]["ensemble"]}
    assert set(rep["accuracy"]) == {"ensemble", "single"}  # single: the inference both models have
    assert [m["primary"] for m in rep["members"]] == ["single", "distilled"]


def _argmax(values) -> tuple[int, float]:
    """(first index of the largest value, its gap to the runner-up) of a list of floats."""
    top = max(range(len(values)), key=lambda k: (values[k], -k))
    return top, values[top] - max(v for k, v in enumerate(values) if k != top)


def _softmax(values) -> list[float]:
    top = max(values)
    e = [math.exp(v - top) for v in values]
    return [v / sum(e) for v in e]


@pytest.mark.parametrize("mode", ["sla", "sla+sd", "da", "mt"])
def test_reported_test_accuracies_match_a_per_image_brute_force(tmp_path, mode):
    """Every test inference of summary.json against a loop over images and rotations: each rotated
    image alone through the checkpoint's weights, normalised by hand, the inferences' formulas in
    Python floats (none of evaluate.predict / accuracy_report / fewshot_sla.sla is used)."""
    N, M, out = 4, 4, tmp_path / "run"
    opts = {"hidden": 8, "out_channels": 8}  # a setting where every inference lands strictly inside (0, 1)
    cfg = tiny_cfg(out, mode=mode, transforms="rotation", iterations=60, eval_every=30, lr=0.02,
                   backbone_options="hidden=8,out_channels=8")
    run_training(cfg, data=prepare_data(TRAIN, TEST, cfg))
    summary = json.loads((out / "summary.json").read_text())
    state = load_checkpoint(out / "best.pt")
    assert state["iteration"] == summary["best_iteration"]
    model = build_model("conv4", N, M, mode, image_size=16, backbone_options=opts)
    model.load_state_dict(state["model"])  # strict: the checkpoint holds exactly these heads
    model.eval()
    # test-time preprocessing of the default 'sla' augment: (x / 255 - 0.5) / 0.5, no crop or flip
    assert state["format"] == "fewshot-sla/2" and state["pipeline"] == "supervised"
    assert state["data"]["mean"] == state["data"]["std"] == [0.5] * 3
    logits = []  # logits[n][j]: {head: [floats]} of rot90(x_n, j) alone
    with torch.no_grad():
        for img in TEST.images:
            x = (img[None].to(torch.float32) / 255.0 - 0.5) / 0.5
            logits.append([{k: v[0].tolist() for k, v in model(torch.rot90(x, j, (2, 3))).items()} for j in range(M)])
    ys = TEST.labels.tolist()
    correct: dict[str, list[float]] = {}  # inference -> per-image correctness (mean over rows for row inferences)
    preds: dict[str, list[int]] = {}
    gaps, prob_avg = [], []  # prob_avg: the class a probability (not logit) average would pick

    def decide(name, values, target):
        k, gap = _argmax(values)
        gaps.append(gap)
        preds.setdefault(name, []).append(k)
        return float(k == target)

    for rows, y in zip(logits, ys):
        got = {}
        if mode in ("sla", "sla+sd"):
            g = [r["joint"] for r in rows]  # g[j][i*M + j']
            got["single"] = decide("single", [g[0][i * M] for i in range(N)], y)
            got["aggregated"] = decide("aggregated", [sum(g[j][i * M + j] for j in range(M)) / M for i in range(N)], y)
            p = [_softmax(r) for r in g]
            prob_avg.append(_argmax([sum(p[j][i * M + j] for j in range(M)) for i in range(N)])[0])
            got["joint"] = sum(decide("joint", g[j], y * M + j) for j in range(M)) / M
            if mode == "sla+sd":
                got["distilled"] = decide("distilled", rows[0]["class"], y)
        else:
            u = [r["class"] for r in rows]
            got["single"] = decide("single", u[0], y)
            got["aggregated"] = decide("aggregated", [sum(u[j][i] for j in range(M)) / M for i in range(N)], y)
            p = [_softmax(r) for r in u]
            prob_avg.append(_argmax([sum(p[j][i] for j in range(M)) for i in range(N)])[0])
            if mode == "mt":
                got["transform"] = sum(decide("transform", rows[j]["transform"], j) for j in range(M)) / M
        for k, v in got.items():
            correct.setdefault(k, []).append(v)
    acc = {k: sum(v) / len(v) for k, v in correct.items()}
    per_class = {k: [sum(c for c, y in zip(v, ys) if y == cls) / ys.count(cls) for cls in range(N)]
                 for k, v in correct.items()}
    test = summary["test"]
    assert set(test["accuracy"]) == set(acc)
    for k in acc:
        assert test["accuracy"][k] == pytest.approx(acc[k], abs=1e-12), k
        assert test["per_class"][k] == pytest.approx(per_class[k], abs=1e-12), k
    table = {"sla": {"SLA+SI": "single", "SLA+AG": "aggregated"}, "sla+sd": {"SLA+SD": "distilled"},
             "da": {"DA": "single"}, "mt": {"MT": "single"}}[mode]
    assert summary["table"] == pytest.approx({name: acc[k] for name, k in table.items()}, abs=1e-12)
    # the comparison can fail: no decision is a near tie that float noise of batching could flip, no
    # accuracy is trivially 0 or 1, single and aggregated inference disagree on some images, and so do
    # the logit average and a probability average (an aggregation by probabilities would be caught)
    assert min(gaps) > 1e-5
    assert all(0 < a < 1 for a in acc.values()), acc
    assert preds["single"] != preds["aggregated"] and prob_avg != preds["aggregated"]


# ---------------------------------------------------------------------------- configuration and CLI
def test_config_errors_name_the_fix():
    with pytest.raises(ConfigError, match="drop --transforms"):
        SupervisedConfig(mode="baseline", transforms="rotation")
    with pytest.raises(ConfigError, match="M > 1"):
        SupervisedConfig(mode="sla", transforms="none")
    with pytest.raises(ConfigError, match="lr-factors"):
        SupervisedConfig(lr_milestone_fractions=(0.5,), lr_factors=(1.0, 0.1, 0.01))
    with pytest.raises(ConfigError, match="imbalance-ratio"):
        SupervisedConfig(imbalance_ratio=0.5)
    with pytest.raises(ConfigError, match="key=value"):
        SupervisedConfig(backbone_options="width")
    assert SupervisedConfig(mode="baseline").transforms == "none"  # the one default rule of --transforms auto
    assert SupervisedConfig(mode="da").transforms == "rotation"


def test_cli_train_evaluate_resume_on_official_batches(tmp_path, capsys, write_cifar10_batches):
    from fewshot_sla.cli import main

    write_cifar10_batches(tmp_path / "data")
    run = tmp_path / "run"
    common = ["--data-root", str(tmp_path / "data"), "--backbone", "conv4", "--backbone-options",
              "hidden=4,out_channels=4", "--batch-size", "8", "--no-progress", "--no-plot", "--device", "cpu"]
    rc = main(["supervised", *common, "--mode", "sla", "--iterations", "4", "--eval-every", "2",
               "--val-size", "20", "--out-dir", str(run), "--stop-after", "2"])
    assert rc == 0 and "--resume" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # changing what is computed on resume is refused, in one line
        main(["supervised", "--resume", str(run), "--lr", "0.5"])
    assert e.value.code == 2 and "cannot change --lr" in capsys.readouterr().err
    assert main(["supervised", "--resume", str(run), "--no-progress", "--no-plot"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train_size"] == 100 and set(summary["table"]) == {"SLA+SI", "SLA+AG"}
    out_json = tmp_path / "eval.json"
    assert main(["supervised", "--evaluate", str(run), "--output", str(out_json), "--device", "cpu"]) == 0
    assert "SLA+AG" in capsys.readouterr().out
    assert json.loads(out_json.read_text())["table"] == pytest.approx(summary["table"])
    # long-tailed from the command line: Cao et al.'s profile on the full training set (n_max = 12), no
    # validation set, and a one-line note that the recipe is not theirs without --config
    lt = tmp_path / "lt"
    assert main(["supervised", *common, "--mode", "baseline", "--loss", "ldam", "--drw", "--imbalance-ratio", "4",
                 "--epochs", "1", "--eval-every", "1", "--out-dir", str(lt)]) == 0
    lt_summary = json.loads((lt / "summary.json").read_text())
    assert lt_summary["class_counts"] == longtail_counts(12, 10, 4.0) and lt_summary["selection"] == "last checkpoint"
    err = capsys.readouterr().err
    assert "note: --imbalance-ratio 4 without --config" in err and "supervised_cifar10_lt100" in err
    with pytest.raises(SystemExit) as e:  # a validation hold-out cannot coexist with the full-set profile
        main(["supervised", *common, "--imbalance-ratio", "4", "--val-size", "20", "--out-dir", str(tmp_path / "v")])
    assert e.value.code == 2 and "--val-size 20 with --imbalance-ratio 4" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["supervised", *common, "--mode", "baseline", "--transforms", "rotation", "--out-dir", str(tmp_path)])
    assert e.value.code == 2 and "drop --transforms" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "fewshot_sla.supervised", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "--imbalance-ratio" in r.stdout and "--ensemble" in r.stdout
