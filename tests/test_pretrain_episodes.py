"""Supervised pretraining on a few-shot dataset's base classes, then episodes on the frozen
backbone (the RFS protocol, with SLA): `fewshot-sla eval` on a supervised checkpoint against a
hand computation (the checkpoint's backbone features, ProtoNet's closed form, an explicit loop
over the rotations), paired comparisons across pipelines, and a user-registered dataset."""

import json

import pytest
import torch
from skips import import_or_skip
from synthetic import synthetic_dataset

from fewshot_sla.cli import main
from fewshot_sla.data import get_dataset
from fewshot_sla.data.base import DatasetInfo
from fewshot_sla.data.registry import DATASETS, register_dataset
from fewshot_sla.engine import load_model
from fewshot_sla.episodes import EpisodeSampler

COMMON = ["--backbone", "conv4", "--backbone-options", "hidden=8,out_channels=8", "--batch-size", "8",
          "--iterations", "4", "--eval-every", "4", "--device", "cpu", "--quiet", "--no-plot"]


@pytest.fixture(scope="module")
def pretrained(fewshot_folder, tmp_path_factory):
    base = tmp_path_factory.mktemp("pre")
    for mode in ("sla", "baseline"):
        assert main(["supervised", "--dataset", "folder", "--data-root", str(fewshot_folder), "--mode", mode,
                     "--run-dir", str(base / mode), *COMMON]) == 0
    return base


def _features(backbone, images, mean, std):
    x = (images.float() / 255 - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    with torch.no_grad():
        return backbone(x)


def _protonet_acc(fs, ys, fq, yq, n):
    protos = torch.stack([fs[ys == c].mean(0) for c in range(n)])
    logits = -((fq[:, None, :] - protos[None]) ** 2).sum(-1)
    return logits


def test_a_few_shot_dataset_pretrains_on_its_training_classes_only(pretrained):
    loaded = load_model(pretrained / "sla")
    assert loaded.pipeline == "supervised" and loaded.data["num_classes"] == 8  # the train split's classes
    summary = json.loads((pretrained / "sla" / "summary.json").read_text())
    assert summary["test"] is None and summary["selection"] == "last checkpoint"


def test_eval_of_a_supervised_checkpoint_equals_a_hand_computation(pretrained, fewshot_folder, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(pretrained / "sla"), "--episodes", "6", "--n-way", "3", "--k-shot",
                 "2", "--n-query", "2", "--device", "cpu", "--quiet", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    res = report["models"][0]["results"]
    assert set(res) == {"plain", "single", "aggregated"} and report["models"][0]["reported"] == "aggregated"
    assert report["models"][0]["head"] == "protonet" and report["models"][0]["pipeline"] == "supervised"

    loaded = load_model(pretrained / "sla")
    backbone, mean, std = loaded.model.backbone, loaded.data["mean"], loaded.data["std"]
    test = get_dataset("folder", str(fewshot_folder), "test")
    sampler = EpisodeSampler(test.labels, 3, 2, 2, 6, seed=0)
    want = {"plain": [], "single": [], "aggregated": []}
    for i in range(6):
        idx = sampler.episode(i)
        s_idx, q_idx = idx[:6], idx[6:]
        ys = torch.arange(3).repeat_interleave(2)
        yq = torch.arange(3).repeat_interleave(2)
        views = []
        for j in range(4):  # rotation j of support and queries; prototypes per (class, j)
            fs = _features(backbone, torch.rot90(test.images[s_idx], j, dims=(2, 3)), mean, std)
            fq = _features(backbone, torch.rot90(test.images[q_idx], j, dims=(2, 3)), mean, std)
            views.append(_protonet_acc(fs, ys, fq, yq, 3))
        acc = {"plain": views[0], "single": views[0], "aggregated": torch.stack(views).mean(0)}
        for k, logits in acc.items():
            want[k].append((logits.argmax(-1) == yq).double().mean().item())
    for k in want:
        assert res[k]["accuracies"] == pytest.approx(want[k], abs=1e-6), k  # float32 episode means


def test_compare_pairs_a_pretrained_and_a_meta_trained_checkpoint(pretrained, fewshot_folder, tmp_path):
    meta = tmp_path / "meta"
    assert main(["meta-train", "--dataset", "folder", "--data-root", str(fewshot_folder), "--backbone", "conv4",
                 "--backbone-options", "hidden=8,out_channels=8", "--mode", "sla", "--n-way", "3", "--k-shot", "1",
                 "--n-query", "2", "--episodes-per-epoch", "4", "--tasks-per-batch", "2", "--eval-way", "3",
                 "--eval-shot", "1", "--eval-query", "2", "--val-episodes", "2", "--epochs", "1", "--device", "cpu",
                 "--quiet", "--run-dir", str(meta)]) == 0
    out = tmp_path / "cmp.json"
    assert main(["eval", "--checkpoint", str(pretrained / "sla"), "--compare", str(meta), str(pretrained / "baseline"),
                 "--episodes", "4", "--n-way", "3", "--k-shot", "1", "--n-query", "3", "--device", "cpu", "--quiet",
                 "--head", "ridge",
                 "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    models = {m["checkpoint"]: m for m in report["models"]}
    assert models[str(meta)]["head"] == "ridge" and models[str(pretrained / "baseline")]["reported"] == "plain"
    assert set(models[str(pretrained / "baseline")]["results"]) == {"plain"}
    pair = next(c for c in report["comparisons"] if c["b"] == str(meta) and c["inference_a"] == "aggregated"
                and c["inference_b"] == "aggregated")
    a = models[str(pretrained / "sla")]["results"]["aggregated"]["accuracies"]
    b = models[str(meta)]["results"]["aggregated"]["accuracies"]
    assert pair["mean"] == pytest.approx(sum(x - y for x, y in zip(a, b)) / len(a))


def test_a_user_registered_dataset_trains_in_supervised(tmp_path):
    ds = synthetic_dataset(5, 12, 16, 3, seed=4)
    info = DatasetInfo("toyset", 16, 3, (0.5,) * 3, (0.5,) * 3, ("train", "test"), fewshot=False)

    def loader(root, split, *, image_size=None, download=False, **options):
        return ds

    register_dataset("toyset", loader, info)
    try:
        run = tmp_path / "toy"
        assert main(["supervised", "--dataset", "toyset", "--data-root", str(tmp_path), "--mode", "sla", "--val-size",
                     "10", "--run-dir", str(run), *COMMON]) == 0
        summary = json.loads((run / "summary.json").read_text())
        assert summary["dataset"] == "toyset" and summary["train_size"] == 50 and summary["test"] is not None
    finally:
        DATASETS.pop("toyset", None)


@pytest.mark.parametrize("name", ["supervised_rfs_miniimagenet", "supervised_rfs_miniimagenet_sla",
                                  "supervised_rfs_cifarfs", "supervised_rfs_cifarfs_sla",
                                  "supervised_rfs_fc100", "supervised_rfs_fc100_sla"])
def test_rfs_configs_run_rfs_schedule_and_backbone(name):
    """RFS's adjust_learning_rate (train_supervised.py): lr * 0.1 ** #(epoch > [60, 80]) for 1-based
    epochs; its ResNet-12 with average pooling gives 640-d features."""
    import math

    from fewshot_sla.config import build_config
    from fewshot_sla.optim import piecewise_lr_factor
    from fewshot_sla.supervised.config import SupervisedConfig
    from fewshot_sla.supervised.model import model_for_config
    from fewshot_sla.supervised.train import make_schedule

    cfg = build_config(SupervisedConfig, {}, config=name)
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.epochs) == (0.05, 0.9, 5e-4, 64, 100)
    assert cfg.fewshot_dataset and cfg.validation_size == 0 and cfg.augment == "metaoptnet"
    assert cfg.transforms == ("rotation" if name.endswith("_sla") else "none")
    n = 38400  # 64 classes x 600 images (mini-ImageNet, CIFAR-FS)
    sched = make_schedule(cfg, n)
    ipe = math.ceil(n / 64)
    for epoch in (1, 60, 61, 80, 81, 100):  # 1-based, as RFS
        rfs = 0.1 ** sum(epoch > m for m in (60, 80))
        assert piecewise_lr_factor((epoch - 1) * ipe, sched.milestones, sched.factors, sched.warmup,
                                   sched.warmup_unit) == pytest.approx(rfs), epoch
    size = 84 if "mini" in name else 32
    model = model_for_config(cfg, 64, 4 if name.endswith("_sla") else 1, 3, size)
    assert model.backbone.out_dim == 640
    with torch.no_grad():
        assert model.backbone.eval()(torch.zeros(1, 3, size, size)).shape == (1, 640)


def test_eval_with_the_logistic_head_equals_scikit_learn(pretrained, fewshot_folder, tmp_path):
    """RFS's evaluation: L2-normalised features of the pretrained backbone, multinomial logistic
    regression with C = 1 (scikit-learn), per episode."""
    sklearn = import_or_skip("sklearn.linear_model", "pip install scikit-learn (the dev extra)")
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(pretrained / "baseline"), "--episodes", "5", "--n-way", "3",
                 "--k-shot", "2", "--n-query", "2", "--head", "logistic", "--device", "cpu", "--quiet",
                 "--output", str(out)]) == 0
    got = json.loads(out.read_text())["models"][0]["results"]["plain"]["accuracies"]
    loaded = load_model(pretrained / "baseline")
    test = get_dataset("folder", str(fewshot_folder), "test")
    sampler = EpisodeSampler(test.labels, 3, 2, 2, 5, seed=0)
    want = []
    for i in range(5):
        idx = sampler.episode(i)
        f = _features(loaded.model.backbone, test.images[idx], loaded.data["mean"], loaded.data["std"]).double()
        f = f / f.norm(dim=1, keepdim=True)
        y = torch.arange(3).repeat_interleave(2)
        clf = sklearn.LogisticRegression(C=1.0, max_iter=10000, tol=1e-10).fit(f[:6].numpy(), y.numpy())
        want.append(float((torch.from_numpy(clf.predict(f[6:].numpy())) == y).double().mean()))
    assert got == pytest.approx(want, abs=1e-6)


def test_validation_by_episodes_selects_by_the_few_shot_criterion(fewshot_folder, tmp_path):
    """--val-episodes: each validation solves fixed episodes of the val split on the current
    backbone; the logged accuracy equals `fewshot-sla eval --split val` of the saved checkpoint on
    the same episodes (seed 1), and best.pt is the iteration with the best score."""
    run = tmp_path / "run"
    assert main(["supervised", "--dataset", "folder", "--data-root", str(fewshot_folder), "--mode", "sla",
                 "--run-dir", str(run), *COMMON[:-6], "--iterations", "6", "--eval-every", "3", "--device", "cpu",
                 "--quiet", "--no-plot", "--val-episodes", "4", "--val-way", "3", "--val-shot", "1",
                 "--val-query", "2"]) == 0
    vals = [r for r in (json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "val"]
    assert [v["step"] for v in vals] == [3, 6] and all(v["reported"] == "aggregated" for v in vals)
    best = max(vals, key=lambda v: (v["score"], -v["step"]))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_iteration"] == best["step"] and summary["selection"] == "4 validation episodes"
    out = tmp_path / "val.json"
    assert main(["eval", "--checkpoint", str(run / "best.pt"), "--split", "val", "--episodes", "4", "--n-way", "3",
                 "--k-shot", "1", "--n-query", "2", "--seed", "1", "--device", "cpu", "--quiet",
                 "--output", str(out)]) == 0
    res = json.loads(out.read_text())["models"][0]["results"]
    for inf in ("plain", "single", "aggregated"):
        assert res[inf]["mean"] == pytest.approx(best[f"acc_{inf}"], abs=1e-6), inf


def test_validation_episodes_need_a_few_shot_dataset():
    from fewshot_sla.config import ConfigError
    from fewshot_sla.supervised.config import SupervisedConfig

    with pytest.raises(ConfigError, match="--val-episodes needs a few-shot dataset.*use --val-size"):
        SupervisedConfig(dataset="cifar10", val_episodes=10)
    with pytest.raises(ConfigError, match="two validation criteria"):
        SupervisedConfig(dataset="omniglot", val_episodes=10, val_size=100)
