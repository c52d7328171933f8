"""End-to-end meta-training and episode evaluation on tiny synthetic data (no real datasets).

Tiny everything: Conv-4 with 8 filters at 16 px, 3-way episodes, a few steps per epoch.
"""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from synthetic import synthetic_dataset

from fewshot_sla.data.spec import ImageSpec
from fewshot_sla.engine import load_model
from fewshot_sla.episodes import EpisodeSampler
from fewshot_sla.meta.batches import episode_indices
from fewshot_sla.meta.config import MetaTrainConfig
from fewshot_sla.meta.evaluate import evaluate_episodes
from fewshot_sla.meta.train import resume_config, train
from fewshot_sla.rundir import RunDir

TRAIN = synthetic_dataset(8, 10, 16, 1, seed=0)
VAL = synthetic_dataset(6, 10, 16, 1, seed=1, prefix="val")
DATA = {"train": TRAIN, "val": VAL}


def tiny(tmp_path, name="run", **kw):
    base = dict(
        dataset="synthetic", backbone="conv4", backbone_options={"hidden": 8, "out_channels": 8},
        head="protonet", svm_max_iter=3, mode="sla", transforms="rotation", n_way=3, k_shot=1, n_query=2,
        episodes_per_epoch=6, tasks_per_batch=2, eval_way=3, eval_shot=1, eval_query=3, val_episodes=12,
        eval_tasks_per_batch=6, epochs=1, lr=0.05, lr_milestones=(), lr_factors=(1.0,), log_every=2,
        run_dir=str(tmp_path / name), quiet=True, device="cpu", test_episodes=0,
    )
    base.update(kw)
    return MetaTrainConfig(**base)


def _state_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _no_time(records):
    return [{k: v for k, v in r.items() if k != "time"} for r in records]


@pytest.mark.parametrize("mode", ["baseline", "da", "sla", "sla+sd"])
@pytest.mark.parametrize("head", ["protonet", "ridge", "svm", "r2d2"])
def test_every_mode_and_head_trains_validates_and_checkpoints(tmp_path, mode, head):
    cfg = tiny(tmp_path, mode=mode, head=head, episodes_per_epoch=4, val_episodes=6)
    summary = train(cfg, datasets=DATA)
    run = RunDir(cfg.run_dir)
    assert (run.path / "best.pt").exists() and (run.path / "last.pt").exists()
    assert run.read_json("summary.json")["reported_inference"] == cfg.reported_inference
    val = summary["last"]["val"]
    assert set(val) == set(cfg.inferences)
    assert all(0.0 <= r["mean"] <= 1.0 and r["n"] == 6 for r in val.values())
    records = run.read_metrics()
    train_recs = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_recs] == [2] and math.isfinite(train_recs[0]["loss"])
    if mode == "sla+sd":
        assert {"loss_sla", "loss_distill", "loss_ce"} <= set(train_recs[0])
    # the checkpoint rebuilds the same model from its own config, with no training data
    loaded = load_model(run.path / "best.pt")
    model, tcfg, ckpt = loaded.model, loaded.config, loaded.checkpoint
    assert tcfg.mode == mode and tcfg.head == head and ckpt["step"] == 2
    if head == "svm":
        assert model.head.dtype == torch.float64  # the QP is solved in double precision by default


def test_sla_learns_separable_classes_above_chance(tmp_path):
    cfg = tiny(tmp_path, mode="sla+sd", episodes_per_epoch=16, epochs=2, val_episodes=24, lr=0.1)
    summary = train(cfg, datasets=DATA)
    val = summary["last"]["val"]
    chance = 1 / 3
    for inf in ("single", "aggregated", "distilled"):
        assert val[inf]["mean"] > chance + 0.25, (inf, val[inf])


def test_same_seed_same_numbers_and_episodes(tmp_path):
    a = train(tiny(tmp_path, "a", mode="sla+sd", epochs=2), datasets=DATA)
    b = train(tiny(tmp_path, "b", mode="sla+sd", epochs=2), datasets=DATA)
    train(tiny(tmp_path, "c", mode="sla+sd", epochs=2, seed=1), datasets=DATA)
    wa = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["model"]
    wb = torch.load(tmp_path / "b" / "last.pt", weights_only=False)["model"]
    wc = torch.load(tmp_path / "c" / "last.pt", weights_only=False)["model"]
    _state_equal(wa, wb)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert _no_time(RunDir(tmp_path / "a").read_metrics()) == _no_time(RunDir(tmp_path / "b").read_metrics())
    assert a["best"] == b["best"] and a["last"] == b["last"]
    # the training stream: task t of step s is episode s*T + t of one seeded sampler
    assert episode_indices(3, 4) == [12, 13, 14, 15]
    assert episode_indices(3, 4, rank=1, world_size=2) == [13, 15]
    assert sorted(episode_indices(5, 6, 0, 3) + episode_indices(5, 6, 1, 3) + episode_indices(5, 6, 2, 3)) \
        == episode_indices(5, 6)
    with pytest.raises(ValueError, match="multiple of 4"):
        episode_indices(0, 6, 0, 4)


def test_resume_gives_the_same_weights_and_metrics(tmp_path):
    # resnet12 with dropout/DropBlock (global torch RNG) and crop+flip augmentation (its own
    # generator): the RNG states in the checkpoint must be restored for the runs to agree
    kw = dict(mode="sla+sd", backbone="resnet12", backbone_options={"widths": [4, 4, 4, 4], "drop_rate": 0.1},
              augment="standard", epochs=2, lr_milestones=(1,), lr_factors=(1.0, 0.1), log_every=1)
    train(tiny(tmp_path, "straight", **kw), datasets=DATA)
    train(tiny(tmp_path, "killed", **{**kw, "epochs": 1}), datasets=DATA)
    cfg = resume_config(tmp_path / "killed", {"epochs": 2, "quiet": True})
    assert cfg.epochs == 2
    train(cfg, datasets=DATA, resume=True)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "killed" / "last.pt", weights_only=False)
    _state_equal(a["model"], b["model"])
    assert a["step"] == b["step"] == 6 and a["best"] == b["best"]
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    ra, rb = RunDir(tmp_path / "straight").read_metrics(), RunDir(tmp_path / "killed").read_metrics()
    assert _no_time(ra) == _no_time(rb)
    assert [r["lr"] for r in ra if r["kind"] == "train"] == [0.05] * 3 + [pytest.approx(0.005)] * 3
    _state_equal(torch.load(tmp_path / "straight" / "best.pt", weights_only=False)["model"],
                 torch.load(tmp_path / "killed" / "best.pt", weights_only=False)["model"])


def test_resume_after_a_kill_mid_epoch_drops_later_metric_records(tmp_path):
    cfg = tiny(tmp_path, "r", mode="baseline", epochs=1)
    train(cfg, datasets=DATA)
    run = RunDir(cfg.run_dir)
    run.log({"kind": "train", "epoch": 2, "step": 4, "loss": 9.0})  # written after last.pt, then killed
    train(resume_config(cfg.run_dir, {"epochs": 2}), datasets=DATA, resume=True)
    steps = [(r["kind"], r["step"]) for r in run.read_metrics()]
    assert steps == [("train", 2), ("train", 3), ("val", 3), ("train", 5), ("train", 6), ("val", 6)]
    assert all(r.get("loss") != 9.0 for r in run.read_metrics())


def test_evaluate_episodes_matches_a_brute_force_protonet(tmp_path):
    cfg = tiny(tmp_path, mode="baseline", episodes_per_epoch=8)
    train(cfg, datasets=DATA)
    loaded = load_model(tmp_path / "run" / "best.pt")
    model, ckpt = loaded.model, loaded.checkpoint
    pre = ImageSpec.from_checkpoint(ckpt["data"]).normalise
    accs = evaluate_episodes(model, VAL, pre, n_way=3, k_shot=2, n_query=4, n_episodes=5, seed=3,
                             device=torch.device("cpu"), tasks_per_batch=2)["plain"]
    sampler = EpisodeSampler(VAL.labels, 3, 2, 4, 5, seed=3)
    model.eval()
    with torch.no_grad():
        for e in range(5):
            idx = sampler.episode(e)
            feats = [model.backbone(pre(VAL.images[i][None]))[0] for i in idx]
            protos = [torch.stack(feats[c * 2:(c + 1) * 2]).mean(0) for c in range(3)]
            correct = 0
            for j, f in enumerate(feats[6:]):
                d = [float((f - p).pow(2).sum()) for p in protos]
                correct += int(np.argmin(d) == j // 4)
            assert accs[e] == pytest.approx(correct / 12)


def test_evaluate_episodes_matches_a_brute_force_sla_ridge(tmp_path):
    """SLA+SI and SLA+AG of a ridge head against numpy: per-image features of every rotation,
    the NM-way ridge solution a = (K + lambda I)^-1 Y on the linear kernel, logits k(q, S) a
    (MetaOptNet's factor 2 and the learnt scale are positive and leave the argmax alone)."""
    cfg = tiny(tmp_path, mode="sla", head="ridge", transforms="rotation", episodes_per_epoch=8)
    train(cfg, datasets=DATA)
    loaded = load_model(tmp_path / "run" / "best.pt")
    model, ckpt = loaded.model, loaded.checkpoint
    pre = ImageSpec.from_checkpoint(ckpt["data"]).normalise
    n, k, q, m, lam = 3, 2, 4, 4, cfg.ridge_lambda
    accs = evaluate_episodes(model, VAL, pre, n_way=n, k_shot=k, n_query=q, n_episodes=4, seed=5,
                             device=torch.device("cpu"), tasks_per_batch=2)
    sampler = EpisodeSampler(VAL.labels, n, k, q, 4, seed=5)
    model.eval()
    with torch.no_grad():
        for e in range(4):
            idx = sampler.episode(e)
            # feats[r][j]: view j (rotation by j quarter turns) of episode row r
            feats = [[model.backbone(torch.rot90(pre(VAL.images[i][None]), j, (2, 3)))[0].double().numpy()
                      for j in range(m)] for i in idx]
            S = np.stack([feats[r][j] for r in range(n * k) for j in range(m)])  # row r*M + j
            Y = np.zeros((n * k * m, n * m))
            for r in range(n * k):
                for j in range(m):
                    Y[r * m + j, (r // k) * m + j] = 1.0
            a = np.linalg.solve(S @ S.T + lam * np.eye(len(S)), Y)
            hits = {"single": 0, "aggregated": 0}
            for t, r in enumerate(range(n * k, len(idx))):
                logits = np.stack([S @ feats[r][j] for j in range(m)]) @ a  # [view j, class (i, j')]
                single = [logits[0, i * m] for i in range(n)]
                agg = [np.mean([logits[j, i * m + j] for j in range(m)]) for i in range(n)]
                hits["single"] += int(np.argmax(single) == t // q)
                hits["aggregated"] += int(np.argmax(agg) == t // q)
            for name, h in hits.items():
                assert accs[name][e] == pytest.approx(h / (n * q)), (name, e)


def test_training_episodes_are_the_seeded_stream(tmp_path):
    # the episodes a run trains on are exactly s*T + t of EpisodeSampler(train labels, seed)
    cfg = tiny(tmp_path, mode="baseline")
    s = EpisodeSampler(TRAIN.labels, 3, 1, 2, 100, seed=cfg.seed)
    seen = []
    import fewshot_sla.meta.train as mt

    orig = mt.load_batch

    def spy(ds, sampler, indices, *a, **k):
        if ds is TRAIN:
            seen.append([sampler.episode(i) for i in indices])
        return orig(ds, sampler, indices, *a, **k)

    mt.load_batch = spy
    try:
        train(cfg, datasets=DATA)
    finally:
        mt.load_batch = orig
    assert seen == [[s.episode(2 * step + t) for t in range(2)] for step in range(3)]


def test_config_roundtrip_through_the_checkpoint(tmp_path):
    cfg = tiny(tmp_path, mode="da", transforms="rotation2", label_smoothing=0.1)
    train(cfg, datasets=DATA)
    tcfg = load_model(tmp_path / "run").config  # a run directory -> best.pt
    assert dataclasses.asdict(tcfg) == dataclasses.asdict(cfg)


def test_final_test_uses_the_evaluation_svm_iterations(tmp_path, monkeypatch):
    """--test-episodes scores best.pt as `fewshot-sla eval` does: MetaOptNet's 3 test-time QP
    iterations, not the 15 of training and validation."""
    import fewshot_sla.meta.evaluate as me
    import fewshot_sla.meta.train as mt
    from fewshot_sla.meta.config import EvalConfig

    seen = []
    real = mt.evaluate_episodes

    def spy(model, *args, desc="eval", **kw):
        seen.append((desc, dict(model.head_kwargs)))
        return real(model, *args, desc=desc, **kw)

    monkeypatch.setattr(mt, "evaluate_episodes", spy)  # validation
    monkeypatch.setattr(me, "evaluate_episodes", spy)  # the final test: `fewshot-sla eval`'s evaluate
    cfg = tiny(tmp_path, head="svm", mode="baseline", transforms="none", svm_max_iter=15, test_episodes=6)
    summary = train(cfg, datasets={**DATA, "test": VAL})
    assert seen == [("validation", {}), ("best.pt", {"max_iter": EvalConfig().svm_max_iter})]
    assert EvalConfig().svm_max_iter == 3 and summary["test"]["plain"]["n"] == 6


def test_adam_optimizer_is_used_and_checkpointed(tmp_path):
    train(tiny(tmp_path, optimizer="adam", lr=1e-3, mode="baseline", transforms="none"), datasets=DATA)
    state = torch.load(RunDir(tmp_path / "run").last, weights_only=False)["optimizer"]
    first = next(iter(state["state"].values()))
    assert {"exp_avg", "exp_avg_sq"} <= set(first) and state["param_groups"][0]["lr"] == 1e-3


def test_eval_dataset_options_override_tests_a_rotated_classes_model_on_plain_classes(tmp_path):
    from test_data_formats import make_omniglot

    from fewshot_sla.config import ConfigError
    from fewshot_sla.meta.config import EvalConfig
    from fewshot_sla.meta.evaluate import evaluate

    for part in ("background", "evaluation"):
        make_omniglot(tmp_path / "omni", part, size=20)
    cfg = tiny(tmp_path, dataset="omniglot", data_root=str(tmp_path / "omni"), image_size=16, mode="baseline",
               transforms="none", n_way=2, n_query=1, val_episodes=0,
               dataset_options={"val_alphabets": 1, "rotate_classes": True})
    train(cfg)
    rotated = RunDir(tmp_path / "run").last
    ckpt = torch.load(rotated, weights_only=False)  # the reference: the same weights, stored without the option
    ckpt["config"]["dataset_options"] = {"val_alphabets": 1}
    plain = tmp_path / "plain.pt"
    torch.save(ckpt, plain)
    opts = dict(split="test", episodes=6, n_way=3, k_shot=1, n_query=2, quiet=True, device="cpu",
                output=str(tmp_path / "eval.json"))
    ref = evaluate(EvalConfig(checkpoint=str(plain), **opts))["models"][0]["results"]["plain"]["accuracies"]
    over = evaluate(EvalConfig(checkpoint=str(rotated), dataset_options={"rotate_classes": False}, **opts))
    assert over["models"][0]["results"]["plain"]["accuracies"] == ref
    # the report records which split it drew from: the merged options and the split's size, counted by hand
    # (test = the evaluation folder's characters with val_alphabets alone; rotate_classes makes 4 of each)
    from test_data_formats import ALPHABETS, DRAWERS

    chars = sum(ALPHABETS.values())
    assert (over["dataset_options"], over["classes"], over["images"]) == (
        {"val_alphabets": 1, "rotate_classes": False}, chars, chars * DRAWERS)
    kept = evaluate(EvalConfig(checkpoint=str(rotated), **opts))
    assert (kept["dataset_options"], kept["classes"], kept["images"]) == (
        {"val_alphabets": 1, "rotate_classes": True}, 4 * chars, 4 * chars * DRAWERS)
    assert json.loads((tmp_path / "eval.json").read_text())["classes"] == 4 * chars
    with pytest.raises(ConfigError, match="different test splits"):  # 4x the classes: other episodes
        evaluate(EvalConfig(checkpoint=str(plain), compare=(str(rotated),), **opts))
    both = evaluate(EvalConfig(checkpoint=str(plain), compare=(str(rotated),),
                               dataset_options={"rotate_classes": False}, **opts))
    assert [m["results"]["plain"]["accuracies"] for m in both["models"]] == [ref, ref]
    from fewshot_sla.cli import main  # the command line parses the option string

    out = tmp_path / "cli.json"
    assert main(["eval", "--checkpoint", str(rotated), "--dataset-options", "rotate_classes=false", "--split", "test",
                 "--episodes", "6", "--n-way", "3", "--k-shot", "1", "--n-query", "2", "--quiet", "--device", "cpu",
                 "--output", str(out)]) == 0
    assert json.loads(out.read_text())["models"][0]["results"]["plain"]["accuracies"] == ref


def test_scale_init_starts_the_logit_scales_and_multiplies_the_first_logits(tmp_path):
    from fewshot_sla.meta.batches import load_batch
    from fewshot_sla.meta.methods import run_episodes
    from fewshot_sla.meta.model import build_model

    def first_logits(cfg):
        torch.manual_seed(0)
        model = build_model(cfg, 1, 16)
        batch = load_batch(VAL, EpisodeSampler(VAL.labels, 3, 1, 2, 1, seed=0), [0], torch.device("cpu"),
                           ImageSpec(1, 16, (0.5,), (0.25,)).normalise)
        with torch.no_grad():
            return model, run_episodes(model, batch, loss=None, inferences=["single", "distilled"]).logits

    ref_model, ref = first_logits(tiny(tmp_path, head="ridge", mode="sla+sd"))
    model, out = first_logits(tiny(tmp_path, head="ridge", mode="sla+sd", scale_init=10.0))
    assert (ref_model.scale.item(), ref_model.distill_scale.item()) == (1.0, 1.0)  # MetaOptNet's default
    assert (model.scale.item(), model.distill_scale.item()) == (10.0, 10.0)
    for k in ("single", "distilled"):  # the same weights: logits x 10
        assert ref[k].abs().max() > 0.01
        torch.testing.assert_close(out[k], 10.0 * ref[k], rtol=1e-5, atol=1e-6)
    fixed = tiny(tmp_path, name="fixed", head="ridge", scale_init=10.0, learn_scale=False, optimizer="adam", lr=1e-3)
    train(fixed, datasets=DATA)
    assert float(torch.load(RunDir(tmp_path / "fixed").last, weights_only=False)["model"]["scale"]) == 10.0
    learned = tiny(tmp_path, name="learned", head="ridge", scale_init=10.0, optimizer="adam", lr=1e-3)
    train(learned, datasets=DATA)  # 3 Adam steps of lr 1e-3 from 10: moved, by a few lr at most
    scale = float(torch.load(RunDir(tmp_path / "learned").last, weights_only=False)["model"]["scale"])
    assert 0 < abs(scale - 10.0) < 3 * 3.2e-3


@pytest.mark.parametrize("source", ["synthetic", "folder"])
def test_image_spec_preprocesses_as_the_old_make_preprocess(tmp_path, fewshot_folder, source):
    """A checkpoint's ImageSpec gives the tensors of the old path: ``make_preprocess`` normalised with the
    checkpoint's mean/std (eval) and took training recipes from ``get_augmentation`` of the dataset, or of
    its ``folder`` stand-in for an unregistered one; and the normalisation is ``(x / 255 - mean) / std``."""
    from fewshot_sla.data.augment import RECIPES, AugmentConfig, BatchAugment, get_augmentation

    kw = {"dataset": "folder", "data_root": str(fewshot_folder)} if source == "folder" else {}
    train(tiny(tmp_path, episodes_per_epoch=2, val_episodes=0, **kw), datasets=None if kw else DATA)
    data = load_model(tmp_path / "run").data
    spec, x = ImageSpec.from_checkpoint(data), VAL.images[:7]
    assert (spec.channels, spec.image_size, spec.invert) == (1, 16, False)
    old = BatchAugment(AugmentConfig(mean=tuple(data["mean"]), std=tuple(data["std"])))
    by_hand = (x.float() / 255.0 - torch.tensor(data["mean"]).view(1, -1, 1, 1)) / torch.tensor(data["std"]).view(
        1, -1, 1, 1)
    assert torch.equal(spec.normalise(x), old(x)) and torch.equal(spec.normalise(x), by_hand)
    for donor, sp in [("folder", spec), ("omniglot", ImageSpec(1, 28, (0.1,), (0.2,))),
                      ("cifar-fs", ImageSpec(3, 32, (0.5, 0.4, 0.3), (0.2, 0.2, 0.25))),
                      ("mini-imagenet", ImageSpec(3, 84, (0.5, 0.4, 0.3), (0.2, 0.2, 0.25)))]:
        xs = torch.randint(0, 256, (3, sp.channels, sp.image_size, sp.image_size), dtype=torch.uint8)
        for recipe in RECIPES:
            ref = get_augmentation(donor, recipe, image_size=sp.image_size, mean=sp.mean, std=sp.std)
            got = sp.augmentation(recipe)
            assert got.config == ref.config, (donor, recipe)
            assert torch.equal(got(xs, torch.Generator().manual_seed(1)), ref(xs, torch.Generator().manual_seed(1)))
