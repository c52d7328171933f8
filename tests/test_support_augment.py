"""``--support-augment K`` (RFS's n_aug_support_samples): K = 1 without augmentation equals plain
evaluation episode by episode for every head and pipeline; K copies equal an explicit loop (the
support built copy by copy, class means by hand, nearest mean); draws depend on (seed, episode) only."""

import json

import numpy as np
import pytest
import torch
from predict_helpers import meta_run, supervised_run
from synthetic import synthetic_dataset

from fewshot_sla.cli import main
from fewshot_sla.data.spec import ImageSpec
from fewshot_sla.engine import load_model
from fewshot_sla.episodes import EpisodeSampler
from fewshot_sla.meta.config import EvalConfig
from fewshot_sla.meta.cross_domain import resolve_target
from fewshot_sla.meta.evaluate import evaluate
from fewshot_sla.meta.model import EPISODIC_MODELS
from fewshot_sla.seeding import seeded_generator
from fewshot_sla.support_augment import STREAM, augment_copies

TEST = synthetic_dataset(6, 10, 16, 1, seed=5, noise=0.6, prefix="te")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("aug")
    return {"sla+sd": meta_run(base / "sd"), "baseline": meta_run(base / "base", mode="baseline"),
            "supervised": supervised_run(base / "sup")}


def _cache(run):
    """The in-memory test split under the key ``evaluate`` looks up for ``run``."""
    loaded = load_model(run)
    _, tcfg = EPISODIC_MODELS.build(loaded.pipeline, loaded, "", {}, 3)
    rgb = loaded.pipeline == "supervised"
    return {resolve_target("", "", {}, tcfg).key("test"): synthetic_dataset(6, 10, 16, 3, seed=5, prefix="te")
            if rgb else TEST}


def _eval(run, tmp_path, **kw):
    cfg = EvalConfig(checkpoint=str(run), episodes=6, n_way=3, k_shot=2, n_query=3, seed=4, device="cpu",
                     quiet=True, output=str(tmp_path / "e.json"), **kw)
    return evaluate(cfg, datasets=_cache(run))


@pytest.mark.parametrize("which,head", [("sla+sd", ""), ("sla+sd", "ridge"), ("baseline", "svm"),
                                        ("supervised", "protonet")])
def test_one_copy_without_augmentation_equals_plain_evaluation(which, head, runs, tmp_path):
    plain = _eval(runs[which], tmp_path, head=head)
    one = _eval(runs[which], tmp_path, head=head, support_augment=1, support_recipe="none")
    a, b = plain["models"][0]["results"], one["models"][0]["results"]
    assert list(a) == list(b)
    for inf in a:
        assert a[inf]["accuracies"] == b[inf]["accuracies"], inf
    assert one["record"]["protocol"]["support_augment"] == 1 and plain["record"]["protocol"]["support_augment"] == 0


def _explicit(run, k_copies, recipe, **ep):
    """Per-episode accuracies with a support of K augmented copies built by hand (class means by loops)."""
    loaded = load_model(run)
    spec = ImageSpec.from_checkpoint(loaded.data)
    aug, norm = spec.augmentation(recipe), spec.normalise
    sampler = EpisodeSampler(TEST.labels, ep["n_way"], ep["k_shot"], ep["n_query"], ep["episodes"], seed=ep["seed"],
                             class_names=list(TEST.class_names))
    s = ep["n_way"] * ep["k_shot"]
    accs = []
    with torch.no_grad():
        for e in range(ep["episodes"]):
            idx = sampler.episode(e)
            support = TEST.images[idx[:s]]
            rows = torch.cat([support for _ in range(k_copies)])  # copy k of image i is row k * S + i (RFS's tile)
            fs = loaded.model.backbone(aug(rows, generator=seeded_generator(ep["seed"], STREAM, e))).double()
            fq = loaded.model.backbone(norm(TEST.images[idx[s:]])).double()
            means = []
            for c in range(ep["n_way"]):
                members = [k * s + c * ep["k_shot"] + j for k in range(k_copies) for j in range(ep["k_shot"])]
                means.append(fs[members].mean(0))
            d = ((fq[:, None] - torch.stack(means)[None]) ** 2).sum(-1)
            truth = torch.arange(ep["n_way"]).repeat_interleave(ep["n_query"])
            accs.append(float((d.argmin(1) == truth).double().mean()))
    return accs


def test_k_copies_equal_an_explicit_loop_and_depend_on_the_episode_only(runs, tmp_path):
    run = runs["baseline"]
    k = 3
    out = _eval(run, tmp_path, support_augment=k, support_recipe="standard", tasks_per_batch=4)
    hand = _explicit(run, k, "standard", n_way=3, k_shot=2, n_query=3, episodes=6, seed=4)
    got = out["models"][0]["results"]["plain"]["accuracies"]
    assert got == pytest.approx(hand, abs=1e-6)
    # the draws of an episode do not depend on which other episodes share its batch
    again = _eval(run, tmp_path, support_augment=k, support_recipe="standard", tasks_per_batch=1)
    assert again["models"][0]["results"]["plain"]["accuracies"] == got
    assert out["models"][0]["support_recipe"] == "standard" and out["record"]["protocol"]["support_augment"] == k


def test_augment_copies_tiles_copy_major():
    x = torch.arange(2 * 1 * 2 * 2, dtype=torch.uint8).view(2, 1, 2, 2)
    y = torch.tensor([0, 1])
    seen = []

    def record(batch, generator=None):
        seen.append(batch.clone())
        return batch.float()

    out, labels = augment_copies(x, y, 3, record, None)
    assert labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert torch.equal(seen[0], torch.stack([x[0], x[1], x[0], x[1], x[0], x[1]]))
    assert out.shape == (6, 1, 2, 2)


def test_predict_support_augment(runs, episode, tmp_path, capsys):
    def predict(name, *extra):
        out = tmp_path / f"{name}.json"
        assert main(["predict", "--checkpoint", str(runs["baseline"]), "--support", str(episode / "support"),
                     "--query", str(episode / "query"), "--quiet", "--output", str(out), *extra]) == 0
        return json.loads(out.read_text())

    plain = predict("plain")
    one = predict("one", "--support-augment", "1")  # the checkpoint trained without augmentation
    three = predict("three", "--support-augment", "3")
    assert one["support_augment"] == 1 and one["support_recipe"] == "none" and plain["support_augment"] == 0
    for r0, r1, r3 in zip(plain["predictions"], one["predictions"], three["predictions"]):
        assert r0 == r1
        # three identical copies: the same class means, the same probabilities
        assert np.allclose([r0[c] for c in plain["classes"]], [r3[c] for c in plain["classes"]], atol=1e-6)
    capsys.readouterr()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_torchrun_eval_with_support_augment_equals_one_process(fewshot_folder, tmp_path):
    from test_distributed import torchrun
    from test_meta_cli import train_args

    run = tmp_path / "run"
    assert main(train_args(fewshot_folder, run, "--mode", "sla", "--augment", "metaoptnet", "--epochs", "1")) == 0
    common = ["eval", "--checkpoint", str(run), "--episodes", "7", "--n-query", "2", "--tasks-per-batch", "2",
              "--support-augment", "3", "--device", "cpu", "--quiet", "--seed", "2"]
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    assert main([*common, "--output", str(one)]) == 0
    proc = torchrun(2, *common, "--output", str(two))
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = json.loads(one.read_text())["models"][0], json.loads(two.read_text())["models"][0]
    assert a["support_recipe"] == "metaoptnet"
    for inference in ("single", "aggregated"):
        assert a["results"][inference]["accuracies"] == b["results"][inference]["accuracies"], inference
