"""``eval --dataset``: a checkpoint scored on another dataset through its own image specification,
checked against a hand computation (numpy grey/RGB conversion, PIL resize, the checkpoint's
normalisation, the backbone, class means and the nearest mean), and its one-line refusals."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from predict_helpers import meta_run, supervised_run
from synthetic import synthetic_dataset, write_image_folder

from fewshot_sla.cli import main
from fewshot_sla.data import get_dataset
from fewshot_sla.engine import load_model
from fewshot_sla.episodes import EpisodeSampler
from fewshot_sla.meta.config import EvalConfig
from fewshot_sla.meta.evaluate import evaluate

EPISODE = dict(n_way=3, k_shot=2, n_query=3, episodes=6, seed=3)


@pytest.fixture(scope="module")
def grey_run(tmp_path_factory):
    """A meta-trained ProtoNet (baseline): grey 16 px synthetic images."""
    return meta_run(tmp_path_factory.mktemp("xd") / "grey", mode="baseline")


@pytest.fixture(scope="module")
def rgb_run(tmp_path_factory):
    """A supervised checkpoint: RGB 16 px synthetic images, solved with ProtoNet at test time."""
    return supervised_run(tmp_path_factory.mktemp("xd") / "rgb", mode="baseline", transforms="none")


@pytest.fixture(scope="module")
def rgb24(tmp_path_factory):
    """An RGB 24 px image folder (5 test classes): another domain for both checkpoints."""
    ds = synthetic_dataset(5, 8, 24, 3, seed=9, noise=1.0, prefix="t")  # noisy: accuracies well below 100%
    return write_image_folder(tmp_path_factory.mktemp("rgb24"), {"test": ds})


def _to_spec(pixels: np.ndarray, channels: int, size: int) -> np.ndarray:
    """Hand conversion of uint8 ``[N, C, H, W]``: /255, ITU-R 601 luma or grey copied to RGB
    (numpy), resized with PIL's antialiased bilinear filter on float images."""
    x = pixels.astype(np.float64) / 255.0
    if x.shape[1] == 3 and channels == 1:
        x = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    elif x.shape[1] == 1 and channels == 3:
        x = np.repeat(x, 3, axis=1)
    if x.shape[-1] != size:
        x = np.stack([[np.asarray(Image.fromarray(c.astype(np.float32), mode="F").resize((size, size),
                                                                                        Image.BILINEAR))
                       for c in img] for img in x])
    return np.clip(x, 0.0, 1.0)


def _hand_accuracies(run, root, split="test", **episode):
    """Per-episode accuracies of the nearest class mean of the checkpoint's features of ``root``'s images."""
    loaded = load_model(run, "cpu")
    data = loaded.data
    ds = get_dataset("folder", root, split)
    x = _to_spec(ds.images.numpy(), data["channels"], data["image_size"])
    mean = np.asarray(data["mean"]).reshape(1, -1, 1, 1)
    std = np.asarray(data["std"]).reshape(1, -1, 1, 1)
    with torch.no_grad():
        feats = loaded.model.backbone(torch.from_numpy((x - mean) / std).float()).double().numpy()
    sampler = EpisodeSampler(ds.labels, episode["n_way"], episode["k_shot"], episode["n_query"],
                             episode["episodes"], seed=episode["seed"], class_names=list(ds.class_names))
    accs, margins = [], []
    s = episode["n_way"] * episode["k_shot"]
    for e in range(episode["episodes"]):
        idx = np.asarray(sampler.episode(e))
        sup, qry = feats[idx[:s]], feats[idx[s:]]
        means = sup.reshape(episode["n_way"], episode["k_shot"], -1).mean(1)  # classes in episode order
        d = ((qry[:, None, :] - means[None]) ** 2).sum(-1)
        truth = np.repeat(np.arange(episode["n_way"]), episode["n_query"])
        accs.append(float((d.argmin(1) == truth).mean()))
        srt = np.sort(d, axis=1)
        margins.append(float((srt[:, 1] - srt[:, 0]).min() / srt[:, 1].max()))
    return accs, min(margins)


@pytest.mark.parametrize("which", ["grey", "rgb"])
def test_cross_domain_equals_hand_computation(which, grey_run, rgb_run, rgb24, fewshot_folder, tmp_path, capsys):
    # grey 16 px model on RGB 24 px images (luma + resize); RGB 16 px model on grey 16 px images (copied)
    run, root = (grey_run, rgb24) if which == "grey" else (rgb_run, fewshot_folder)
    out = tmp_path / "xd.json"
    assert main(["eval", "--checkpoint", str(run), "--dataset", "folder", "--data-root", str(root), "--split", "test",
                 "--n-way", "3", "--k-shot", "2", "--n-query", "3", "--episodes", "6", "--seed", "3",
                 "--inferences", "plain", "--head", "protonet", "--device", "cpu", "--quiet",
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    hand, margin = _hand_accuracies(run, root, **EPISODE)
    assert margin > 1e-4  # no near-tie whose argmin float rounding could flip
    (m,) = report["models"]
    assert m["results"]["plain"]["accuracies"] == pytest.approx(hand, abs=1e-6)  # float32 means
    source = "synthetic" if which == "grey" else "cifar10"  # the supervised helper's config names cifar10
    assert report["dataset"] == "folder" and m["source"]["dataset"] == source
    assert report["target"]["channels"] == (3 if which == "grey" else 1)
    assert f"source {source} -> target folder (test split, cross-domain)" in printed
    assert report["record"]["dataset"] == "folder" and report["record"]["checkpoints"][0]["sha256"] == m["sha256"]


def test_without_dataset_the_numbers_are_unchanged(grey_run, fewshot_folder, tmp_path):
    # --dataset naming the checkpoint's own dataset is the same-dataset path: the same episodes and numbers
    ds = synthetic_dataset(6, 10, 16, 1, seed=5, prefix="te")
    cache = {("synthetic", "data", "test", None, "{}"): ds}
    common = dict(checkpoint=str(grey_run), episodes=5, n_way=3, k_shot=1, n_query=2, device="cpu", quiet=True)
    plain = evaluate(EvalConfig(**common, output=str(tmp_path / "a.json")), datasets=cache)
    named = evaluate(EvalConfig(**common, dataset="synthetic", output=str(tmp_path / "b.json")), datasets=cache)
    assert plain["models"][0]["results"] == named["models"][0]["results"]
    assert "cross-domain" not in plain["domains"] and plain["target"]["dataset"] == "synthetic"


def test_compare_on_another_domain_shares_one_loaded_split(grey_run, rgb_run, rgb24, tmp_path, monkeypatch):
    import fewshot_sla.meta.evaluate as ev

    calls = []
    real = ev.load_split

    def spy(name, root, split, image_size=None, download=False, options=None):
        calls.append((name, image_size))
        return real(name, root, split, image_size, download=download, options=options)

    monkeypatch.setattr(ev, "load_split", spy)
    out = tmp_path / "cmp.json"
    assert main(["eval", "--checkpoint", str(grey_run), "--compare", str(rgb_run), "--dataset", "folder",
                 "--data-root", str(rgb24), "--n-way", "3", "--k-shot", "1", "--n-query", "2", "--episodes", "4",
                 "--head", "protonet", "--device", "cpu", "--quiet", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert calls == [("folder", None)]  # one split, at its own size, read by both models in their own spec
    specs = [c["image_spec"]["channels"] for c in report["record"]["checkpoints"]]
    assert specs == [1, 3] and len({m["sha256"] for m in report["models"]}) == 2


def test_one_line_errors(grey_run, tmp_path, capsys):
    def err(*argv):
        with pytest.raises(SystemExit) as e:
            main(["eval", "--checkpoint", str(grey_run), "--device", "cpu", "--quiet", *argv])
        assert e.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1
        return lines[0]

    assert "--data-root" in err("--dataset", "folder")
    assert "unknown dataset 'nope'" in err("--dataset", "nope", "--data-root", str(tmp_path))


def test_the_commands_of_docs_cross_domain_parse():
    import shlex
    from pathlib import Path

    from fewshot_sla.cli import build_parser
    from fewshot_sla.config import build_config
    from fewshot_sla.predict.cli import PredictOptions

    text = (Path(__file__).resolve().parents[1] / "docs" / "how-to" / "cross-domain.md").read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("fewshot-sla ")]
    assert len(lines) == 4
    for line in lines:
        argv = shlex.split(line)[1:]
        args = build_parser().parse_args(argv)
        if argv[0] == "eval":
            cfg = build_config(EvalConfig, args)
            assert cfg.checkpoint and (cfg.dataset or cfg.support_augment)
        else:
            assert build_config(PredictOptions, args).support_augment == 5


def test_compare_refuses_checkpoints_that_read_other_pixels_of_the_same_split(grey_run, tmp_path):
    """Same-dataset --compare: a checkpoint whose dataset options give the same classes but other
    pixels at the same size (here: one changed pixel) is refused in one line; the same pixels pass."""
    from fewshot_sla.config import ConfigError
    from fewshot_sla.rundir import load_checkpoint

    ckpt = load_checkpoint(grey_run / "best.pt")
    ckpt["config"]["dataset_options"] = {"resample": "nearest"}
    other = tmp_path / "other.pt"
    torch.save(ckpt, other)
    ds = synthetic_dataset(6, 10, 16, 1, seed=5, prefix="te")
    edited = ds.derive(ds.images.clone(), ds.labels)
    edited.images[7, 0, 3, 3] ^= 0xFF
    key = ("synthetic", "data", "test", None)
    common = dict(checkpoint=str(grey_run), compare=(str(other),), episodes=3, n_way=3, k_shot=1, n_query=2,
                  device="cpu", quiet=True, output=str(tmp_path / "c.json"))
    same = {(*key, "{}"): ds, (*key, '{"resample": "nearest"}'): ds}
    report = evaluate(EvalConfig(**common), datasets=same)
    assert report["models"][0]["results"] == report["models"][1]["results"]
    changed = {(*key, "{}"): ds, (*key, '{"resample": "nearest"}'): edited}
    with pytest.raises(ConfigError, match="read different pixels of the same split") as e:
        evaluate(EvalConfig(**common), datasets=changed)
    assert "\n" not in str(e.value)
