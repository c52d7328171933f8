"""Using a trained checkpoint on your own images: preprocessing, the classifier API and
``fewshot-sla predict``, each against an independent reference (meta evaluation's
``run_episodes``, a per-class loop, PIL and the dataset loaders)."""

import csv
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from predict_helpers import SHOTS, files, labels_of, manual_inputs, meta_run, supervised_run
from synthetic import synthetic_dataset

from fewshot_sla.cli import main
from fewshot_sla.data import get_dataset
from fewshot_sla.engine import load_model
from fewshot_sla.episodes import EpisodeBatch
from fewshot_sla.heads import get_head
from fewshot_sla.inferences import episode_table, reported
from fewshot_sla.meta.config import MetaTrainConfig
from fewshot_sla.meta.methods import run_episodes
from fewshot_sla.predict import FewShotClassifier, ImageSpec, image_pixels, preprocess_images


@pytest.mark.parametrize("inference, head", [("aggregated", None), ("single", None), ("distilled", None),
                                             ("aggregated", "ridge"), ("distilled", "svm"), ("single", "r2d2")])
def test_predict_proba_equals_meta_evaluation_with_unequal_shots(run, episode, inference, head):
    options = {"max_iter": 3} if head == "svm" else None
    clf = FewShotClassifier.from_checkpoint(run, inference=inference, head=head, head_options=options)
    clf.fit(episode / "support")
    assert clf.classes_ == ["cls000", "cls001", "cls002", "cls003"] and clf.shots_ == list(SHOTS)
    queries = files(episode / "query")
    # a smaller logit scale in both (probabilities away from 0 and 1: the comparison is informative)
    factor = 4.0 / float(clf.logits(clf.preprocess(queries)).abs().max())
    clf.scale *= factor
    probs = clf.predict_proba(queries)
    assert float(probs.max(-1).values.min()) < 0.95
    # reference: run_episodes (what `fewshot-sla eval` computes) on independently preprocessed tensors
    loaded = load_model(run)
    if head is not None:
        loaded.model.head = get_head(head, **(options or {}))
    with torch.no_grad():
        getattr(loaded.model, "distill_scale" if inference == "distilled" else "scale").mul_(factor)
    support = files(episode / "support")
    batch = EpisodeBatch(manual_inputs(support, loaded.data)[None], labels_of(support)[None],
                         manual_inputs(queries, loaded.data)[None], labels_of(queries)[None], n_way=4)
    with torch.no_grad():
        ref = run_episodes(loaded.model, batch, inferences=[inference]).logits[inference][0]
    torch.testing.assert_close(probs, torch.softmax(ref, -1), atol=1e-5, rtol=1e-4)
    assert clf.predict(queries) == [clf.classes_[i] for i in ref.argmax(-1).tolist()]


def _aggregated_by_loop(run_path, episode, scale=None):
    """SLA+AG with ProtoNet by brute force: prototype of (class i, rotation j) = mean of
    f(rot_j(x)) over the class's shots (a loop: unequal shots), logit = mean_j
    -scale * ||f(rot_j(q)) - c_ij||^2; returns softmax probabilities."""
    loaded = load_model(run_path)
    scale = float(loaded.model.scale.detach()) if scale is None else scale
    support, queries = files(episode / "support"), files(episode / "query")
    xs, ys, xq = manual_inputs(support, loaded.data), labels_of(support), manual_inputs(queries, loaded.data)
    logits = torch.zeros(len(queries), 4)
    with torch.no_grad():
        for j in range(4):
            fq = loaded.model.backbone(torch.rot90(xq, j, dims=(2, 3)))
            for i in range(4):
                proto = loaded.model.backbone(torch.rot90(xs[ys == i], j, dims=(2, 3))).mean(0)
                logits[:, i] += -scale * ((fq - proto) ** 2).sum(-1) / 4
    return torch.softmax(logits, -1)


def test_aggregated_protonet_against_a_per_class_loop(run, episode):
    clf = FewShotClassifier.from_checkpoint(run, inference="aggregated").fit(episode / "support")
    scale = clf.scale
    clf.scale = 4.0 / float(clf.logits(clf.preprocess(files(episode / "query"))).abs().max() / scale)
    probs = clf.predict_proba(files(episode / "query"))
    assert float(probs.max(-1).values.min()) < 0.95
    torch.testing.assert_close(probs, _aggregated_by_loop(run, episode, clf.scale), atol=1e-5, rtol=1e-4)


def test_support_as_pairs_tensors_and_pil_gives_the_same_classifier(run, episode):
    support = files(episode / "support")
    queries = files(episode / "query")
    ref = FewShotClassifier.from_checkpoint(run).fit(episode / "support").predict_proba(queries)
    names = [p.parent.name for p in support]
    pairs = [(Image.open(p), n) for p, n in zip(support, names)]
    via_pairs = FewShotClassifier.from_checkpoint(run).fit(pairs)
    torch.testing.assert_close(via_pairs.predict_proba([Image.open(q) for q in queries]), ref)
    u8 = [torch.from_numpy(np.array(Image.open(p)))[None] for p in support]
    via_tensors = FewShotClassifier.from_checkpoint(run).fit(u8, labels=names)
    torch.testing.assert_close(via_tensors.predict_proba(queries), ref)


def test_supervised_checkpoint_embeds_with_its_backbone(tmp_path, episode):
    from fewshot_sla.supervised import SupervisedConfig, prepare_data, run_training
    ds = synthetic_dataset(4, 12, 16, 3, seed=3)  # an RGB model: the grey support images become RGB
    cfg = SupervisedConfig(backbone="conv4", backbone_options="hidden=4,out_channels=4", batch_size=8, quiet=True,
                           plot=False, device="cpu", iterations=2, eval_every=2, log_every=2, val_size=4,
                           mode="sla", transforms="rotation", run_dir=str(tmp_path / "sup"))
    run_training(cfg, data=prepare_data(ds, ds, cfg))
    clf = FewShotClassifier.from_checkpoint(tmp_path / "sup")
    assert clf.inference == "aggregated" and clf.head_name == "protonet"
    clf.fit(episode / "support")
    queries = files(episode / "query")
    loaded = load_model(tmp_path / "sup")
    plain = FewShotClassifier.from_checkpoint(tmp_path / "sup", inference="plain").fit(episode / "support")
    support = files(episode / "support")
    xs, xq = manual_inputs(support, loaded.data), manual_inputs(queries, loaded.data)
    with torch.no_grad():
        fs, fq = loaded.model.backbone(xs), loaded.model.backbone(xq)
    ys = labels_of(support)
    protos = torch.stack([fs[ys == i].mean(0) for i in range(4)])
    d2 = torch.cdist(fq.double(), protos.double()) ** 2
    plain.scale = 4.0 / float(d2.max())  # (unit scale in use; smaller here to keep probabilities soft)
    torch.testing.assert_close(plain.predict_proba(queries), torch.softmax(-plain.scale * d2, -1).float(),
                               atol=1e-5, rtol=1e-4)
    clf.scale = plain.scale
    ref = _aggregated_by_loop(tmp_path / "sup", episode, scale=clf.scale)  # the default for an SLA-trained one
    probs = clf.predict_proba(queries)
    assert float(probs.max(-1).values.min()) < 0.95
    torch.testing.assert_close(probs, ref, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="inference 'distilled' is not available.*plain, single, aggregated"):
        FewShotClassifier.from_checkpoint(tmp_path / "sup", inference="distilled")


# ----------------------------------------------------------------------------- preprocessing
def test_rgb_jpeg_of_another_size_matches_a_manual_pil_conversion(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 256, (30, 45, 3), dtype=np.uint8)).save(path, quality=90)
    mean, std = (0.2, 0.3, 0.4), (0.5, 0.6, 0.7)
    for channels, mode, m, s in ((1, "L", mean[:1], std[:1]), (3, "RGB", mean, std)):
        spec = ImageSpec(channels, 16, m, s)
        ref = np.asarray(Image.open(path).convert(mode).resize((16, 16), Image.Resampling.BILINEAR), np.float32)
        ref = torch.from_numpy(ref.reshape(16, 16, channels)).permute(2, 0, 1) / 255.0
        ref = (ref - torch.tensor(m).view(-1, 1, 1)) / torch.tensor(s).view(-1, 1, 1)
        torch.testing.assert_close(preprocess_images([path], spec)[0], ref)
        # the same pixels as a uint8 tensor [C, H, W] and as a PIL image
        u8 = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1)
        torch.testing.assert_close(preprocess_images([u8, Image.open(path)], spec), torch.stack([ref, ref]))


def test_float_tensor_input_grey_to_rgb_and_resize():
    x = torch.rand(1, 20, 20)
    spec = ImageSpec(3, 10, (0.5,) * 3, (0.25,) * 3)
    ref = torch.nn.functional.interpolate(x[None], size=(10, 10), mode="bilinear", antialias=True)[0]
    torch.testing.assert_close(preprocess_images([x], spec)[0], ((ref - 0.5) / 0.25).expand(3, -1, -1))
    with pytest.raises(ValueError, match="2-channel image cannot be converted"):
        preprocess_images([torch.rand(2, 8, 8)], spec)


def test_omniglot_polarity_matches_the_dataset_loader(tmp_path):
    """A raw Omniglot PNG (black strokes on white) gives the loader's pixels (ink = 255)."""
    rng = np.random.default_rng(1)
    for alpha in ("Alpha", "Beta"):
        for c in (1, 2):
            d = tmp_path / "images_background" / alpha / f"character{c:02d}"
            d.mkdir(parents=True)
            for k in (1, 2):
                a = (rng.random((105, 105)) > 0.2).astype(np.uint8) * 255
                Image.fromarray(a).convert("1").save(d / f"{c:04d}_{k:02d}.png")
    ds = get_dataset("omniglot", tmp_path, "background", image_size=28)
    data = {"dataset": "omniglot", "channels": 1, "image_size": 28, "mean": ds.mean, "std": ds.std}
    spec = ImageSpec.from_checkpoint(data, MetaTrainConfig(dataset="omniglot"))
    assert spec.invert
    files = sorted((tmp_path / "images_background").rglob("*.png"))
    pixels = torch.stack([image_pixels(f, spec) for f in files])
    assert torch.equal((pixels * 255).round().to(torch.uint8), ds.images)
    kept = ImageSpec.from_checkpoint(data, MetaTrainConfig(dataset="omniglot", dataset_options={"invert": False}))
    assert not kept.invert


# ----------------------------------------------------------------------------- the command
def _cli(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    return e.value.code, capsys.readouterr().err.strip()


def test_predict_cli_table_accuracy_csv_and_json(run, episode, tmp_path, capsys):
    out = tmp_path / "preds.csv"
    assert main(["predict", "--checkpoint", str(run), "--support", str(episode / "support"),
                 "--query", str(episode / "query"), "--output", str(out)]) == 0
    text = capsys.readouterr().out
    clf = FewShotClassifier.from_checkpoint(run).fit(episode / "support")
    queries = files(episode / "query")
    probs = clf.predict_proba(queries)
    truth = [p.parent.name for p in queries]
    acc = np.mean([clf.classes_[i] == t for i, t in zip(probs.argmax(-1).tolist(), truth)])
    assert f"accuracy: {100 * acc:.2f}%" in text and "inference distilled" in text
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["path", "prediction", "confidence", "cls000", "cls001", "cls002", "cls003"]
    assert [r["path"] for r in rows] == [str(q) for q in queries]
    got = torch.tensor([[float(r[c]) for c in clf.classes_] for r in rows])
    torch.testing.assert_close(got, probs, atol=1e-6, rtol=1e-5)
    assert all(float(r["confidence"]) == max(float(r[c]) for c in clf.classes_) for r in rows)
    js = tmp_path / "preds.json"
    assert main(["predict", "--checkpoint", str(run), "--support", str(episode / "support"), "--quiet",
                 "--query", str(queries[0]), str(queries[-1]), "--output", str(js), "--inference", "single"]) == 0
    report = json.loads(js.read_text())
    assert report["inference"] == "single" and report["shots"] == list(SHOTS) and "accuracy" not in report
    assert [r["path"] for r in report["predictions"]] == [str(queries[0]), str(queries[-1])]


# predict's default for every checkpoint kind: the table of fewshot_sla.inferences (supervised sla+sd: plain)
DEFAULTS = {("meta", "baseline"): "plain", ("meta", "da"): "plain", ("meta", "sla"): "aggregated",
            ("meta", "sla+sd"): "distilled", ("supervised", "baseline"): "plain", ("supervised", "da"): "plain",
            ("supervised", "mt"): "plain", ("supervised", "sla"): "aggregated", ("supervised", "sla+sd"): "plain"}


@pytest.mark.parametrize("pipeline, mode", list(DEFAULTS))
def test_predict_default_inference_is_the_tables(tmp_path, episode, capsys, pipeline, mode):
    """``fewshot-sla predict`` without ``--inference`` uses the table's reported inference (row ``meta``
    or ``pretrained``), and gives the probabilities of that inference named explicitly."""
    path = tmp_path / "run"
    if pipeline == "meta":
        meta_run(path, mode=mode)
    else:
        supervised_run(path, mode=mode, transforms="auto" if mode == "baseline" else "rotation")
    assert DEFAULTS[pipeline, mode] == reported(episode_table(pipeline), mode)
    out = tmp_path / "p.json"
    argv = ["predict", "--checkpoint", str(path), "--support", str(episode / "support"), "--quiet",
            "--query", str(episode / "query"), "--output", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["inference"] == DEFAULTS[pipeline, mode]
    assert f"inference {DEFAULTS[pipeline, mode]}," in capsys.readouterr().out
    assert main(argv[:-2] + ["--output", str(tmp_path / "e.json"), "--inference", DEFAULTS[pipeline, mode]]) == 0
    explicit = json.loads((tmp_path / "e.json").read_text())["predictions"]
    assert report["predictions"] == explicit


def test_predict_cli_bad_input_is_one_line_and_exit_2(run, episode, tmp_path, capsys):
    sup, qry = str(episode / "support"), str(episode / "query")

    def folder(name, **classes):  # class -> list of file contents (None: a real image)
        for c, contents in classes.items():
            (tmp_path / name / c).mkdir(parents=True)
            for i, content in enumerate(contents):
                f = tmp_path / name / c / f"{i}.png"
                f.write_bytes(content) if content else Image.new("L", (16, 16)).save(f)
        return str(tmp_path / name)

    bad = folder("bad", a=[None], b=[b"not an image"])
    (tmp_path / "empty_q").mkdir()
    cases = [
        (["--support", str(tmp_path / "missing"), "--query", qry], r"support folder .* does not exist"),
        (["--support", bad, "--query", qry], r"cannot read image '.*b/0.png'.*--skip-bad"),
        (["--support", folder("one", a=[None]), "--query", qry], r"has 1 class.*at least 2"),
        (["--support", folder("hole", a=[None], b=[]), "--query", qry], r"support class 'b' .* holds no images"),
        (["--support", sup, "--query", str(tmp_path / "empty_q")], r"query folder .* holds no images"),
        (["--support", sup, "--query", str(tmp_path / "nope.png")], r"query path .* does not exist"),
        (["--support", sup, "--query", qry, "--inference", "plain"], r"'plain' is not available.*sla\+sd"),
        (["--support", sup, "--query", qry, "--output", str(tmp_path / "p.txt")], r"end the name with .csv or .json"),
        (["--support", bad, "--query", qry, "--skip-bad"], r"support class 'b' has no readable images"),
    ]
    for argv, pattern in cases:
        code, err = _cli(capsys, "predict", "--checkpoint", str(run), *argv)
        lines = [line for line in err.splitlines() if not line.startswith("warning:")]
        assert code == 2 and len(lines) == 1 and re.search(pattern, lines[0]), (argv, err)
    assert "warning: skipped: cannot read image" in err  # --skip-bad warned before class b came out empty
