"""``fewshot-sla meta-train`` / ``eval`` / ``plot`` and the root scripts, end to end on a tiny
synthetic image folder (``--dataset folder``): training, resume, evaluation with 95% CIs and
paired comparisons checked against hand computations, one-line errors."""

import json
import math
import runpy
import sys
from pathlib import Path

import pytest
import torch
from skips import import_or_skip

from fewshot_sla.cli import main
from fewshot_sla.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(fewshot_folder):
    return fewshot_folder


def train_args(data_root, run_dir, *extra):
    return ["meta-train", "--dataset", "folder", "--data-root", str(data_root), "--backbone", "conv4",
            "--backbone-options", "hidden=8,out_channels=8", "--head", "protonet", "--n-way", "3",
            "--k-shot", "1", "--n-query", "2", "--episodes-per-epoch", "6", "--tasks-per-batch", "2",
            "--eval-way", "3", "--eval-shot", "1", "--eval-query", "3", "--val-episodes", "6",
            "--lr", "0.05", "--lr-milestones", "1", "--lr-factors", "1", "0.1", "--log-every", "1",
            "--device", "cpu", "--quiet", "--run-dir", str(run_dir), *extra]


@pytest.fixture(scope="module")
def runs(data_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    assert main(train_args(data_root, base / "sd", "--mode", "sla+sd", "--epochs", "2")) == 0
    assert main(train_args(data_root, base / "base", "--mode", "baseline", "--epochs", "2")) == 0
    return base


def _mean_ci_by_hand(values):
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / n
    return mean, 1.96 * math.sqrt(var) / math.sqrt(n)


def test_meta_train_writes_a_complete_run_directory(runs):
    run = RunDir(runs / "sd")
    for name in ("config.json", "metrics.jsonl", "last.pt", "best.pt", "summary.json"):
        assert (run.path / name).exists(), name
    cfg = run.read_json("config.json")
    assert cfg["mode"] == "sla+sd" and cfg["backbone_options"] == {"hidden": 8, "out_channels": 8}
    summary = run.read_json("summary.json")
    assert summary["epochs"] == 2 and summary["steps"] == 6 and summary["reported_inference"] == "distilled"
    val = [r for r in run.read_metrics() if r["kind"] == "val"]
    assert [r["epoch"] for r in val] == [1, 2]
    best = max(val, key=lambda r: r["score"])  # first of equal scores wins (strict improvement)
    assert summary["best"]["epoch"] == best["epoch"]
    assert summary["best"]["score"] == pytest.approx(best["acc_distilled"])
    assert torch.load(run.best, weights_only=False)["epoch"] == best["epoch"]


def test_eval_reports_every_inference_with_hand_checked_ci(runs, tmp_path, capsys):
    out = tmp_path / "sd.json"
    assert main(["eval", "--checkpoint", str(runs / "sd"), "--episodes", "15", "--n-query", "3",
                 "--device", "cpu", "--quiet", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["n_way"] == 3 and report["k_shot"] == 1 and report["episodes"] == 15
    (m,) = report["models"]
    assert list(m["results"]) == ["single", "aggregated", "distilled"] and m["reported"] == "distilled"
    for r in m["results"].values():
        assert len(r["accuracies"]) == 15
        mean, ci = _mean_ci_by_hand(r["accuracies"])
        assert r["mean"] == pytest.approx(mean) and r["ci95"] == pytest.approx(ci)
        assert f"{100 * mean:6.2f} +- {100 * ci:.2f}%" in printed
        # 3 ways x 3 queries per episode: accuracies are multiples of 1/9
        assert all(abs(a * 9 - round(a * 9)) < 1e-6 for a in r["accuracies"])
    # within-model paired differences: distilled minus each other inference
    within = {(c["inference_a"], c["inference_b"]) for c in report["comparisons"]}
    assert within == {("distilled", "single"), ("distilled", "aggregated")}


def test_compare_is_paired_on_the_same_episodes(runs, tmp_path):
    a_only, both = tmp_path / "a.json", tmp_path / "ab.json"
    common = ["--episodes", "20", "--n-query", "3", "--device", "cpu", "--quiet", "--seed", "5"]
    assert main(["eval", "--checkpoint", str(runs / "sd" / "best.pt"), *common, "--output", str(a_only)]) == 0
    assert main(["eval", "--checkpoint", str(runs / "sd" / "best.pt"), "--compare", str(runs / "base"),
                 *common, "--output", str(both)]) == 0
    ra, rab = json.loads(a_only.read_text()), json.loads(both.read_text())
    a, b = rab["models"]
    # the same episodes: A's per-episode accuracies do not depend on what it is compared with
    assert a["results"]["distilled"]["accuracies"] == ra["models"][0]["results"]["distilled"]["accuracies"]
    (c,) = [c for c in rab["comparisons"] if c["a"] != c["b"]]
    assert (c["inference_a"], c["inference_b"]) == ("distilled", "plain")
    diffs = [x - y for x, y in zip(a["results"]["distilled"]["accuracies"], b["results"]["plain"]["accuracies"])]
    mean, ci = _mean_ci_by_hand(diffs)
    assert c["mean"] == pytest.approx(mean) and c["ci95"] == pytest.approx(ci) and c["n"] == 20


def test_compare_loads_each_runs_split_with_its_own_dataset_options(data_root, runs, tmp_path, monkeypatch,
                                                                    capsys):
    import fewshot_sla.meta.evaluate as ev

    other = tmp_path / "nearest"
    assert main(train_args(data_root, other, "--mode", "baseline", "--epochs", "1",
                           "--dataset-options", "resample=nearest")) == 0
    calls = []
    real = ev.load_split

    def spy(name, root, split, image_size=None, download=False, options=None):
        calls.append(dict(options or {}))
        return real(name, root, split, image_size, download, options)

    monkeypatch.setattr(ev, "load_split", spy)
    common = ["--episodes", "4", "--n-query", "2", "--device", "cpu", "--quiet", "--output", str(tmp_path / "o.json")]
    assert main(["eval", "--checkpoint", str(runs / "base"), "--compare", str(other), str(runs / "sd"), *common]) == 0
    # one load per distinct option set: the run trained on nearest-resampled images is scored on them
    assert calls == [{}, {"resample": "nearest"}]

    # a split that differs (here: other classes) cannot be compared episode by episode
    def other_classes(name, root, split, image_size=None, download=False, options=None):
        ds = real(name, root, split, image_size, download, options)
        if options:
            ds.class_names = [c + "_x" for c in ds.class_names]
        return ds

    monkeypatch.setattr(ev, "load_split", other_classes)
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--checkpoint", str(runs / "base"), "--compare", str(other), *common])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1
    assert "different test splits" in err and "--dataset-options" in err and "resample" in err


def test_same_seed_same_episodes_and_numbers_other_seed_differs(runs, tmp_path):
    outs = []
    for i, seed in enumerate(("0", "0", "1")):
        out = tmp_path / f"{i}.json"
        main(["eval", "--checkpoint", str(runs / "base"), "--episodes", "12", "--n-query", "3", "--seed", seed,
              "--device", "cpu", "--quiet", "--output", str(out)])
        outs.append(json.loads(out.read_text())["models"][0]["results"]["plain"]["accuracies"])
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]


def test_cli_resume_continues_to_the_same_result(data_root, runs, tmp_path):
    run = tmp_path / "resumed"
    assert main(train_args(data_root, run, "--mode", "baseline", "--epochs", "1")) == 0
    assert main(["meta-train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0
    a = torch.load(runs / "base" / "last.pt", weights_only=False)["model"]
    b = torch.load(run / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time"} for r in rs]  # noqa: E731
    assert strip(RunDir(run).read_metrics()) == strip(RunDir(runs / "base").read_metrics())


def test_one_line_errors_for_invalid_combinations(data_root, runs, tmp_path, capsys):
    def err_of(argv):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        return err

    e = err_of(train_args(data_root, tmp_path / "x", "--n-way", "9"))
    assert "--n-way 9 needs 9 classes" in e and "at most 8" in e
    e = err_of(train_args(data_root, tmp_path / "x", "--eval-way", "7"))
    assert "--eval-way 7" in e and "at most 6" in e
    # 8 images per class: 1 shot + 8 queries is one too many, and the error names the options to change
    e = err_of(train_args(data_root, tmp_path / "x", "--n-query", "8"))
    assert "has 8 images" in e and "need 9 per class" in e and "lower --k-shot or --n-query" in e
    e = err_of(train_args(data_root, tmp_path / "x", "--eval-query", "8"))
    assert "need 9 per class" in e and "lower --eval-shot or --eval-query" in e
    e = err_of(["eval", "--checkpoint", str(runs / "base"), "--n-query", "8", "--device", "cpu", "--quiet"])
    assert "need 9 per class" in e and "lower --k-shot or --n-query" in e
    e = err_of(train_args(data_root, tmp_path / "x", "--mode", "sla", "--transforms", "color_perm3"))
    assert "3-channel" in e
    assert not (tmp_path / "x").exists()  # nothing written for a rejected run
    e = err_of(train_args(data_root, tmp_path / "x", "--backbone-options", "hiden=8"))
    assert "hiden" in e
    e = err_of(["meta-train", "--resume", str(runs / "base"), "--lr", "0.5"])
    assert "cannot change --lr" in e
    # repeating an unchanged option is fine: the same run is already complete, nothing to do
    assert main(["meta-train", "--resume", str(runs / "base"), "--backbone-options", "hidden=8,out_channels=8",
                 "--quiet"]) == 0
    e = err_of(train_args(data_root, runs / "base"))  # run directory already used
    assert "--resume" in e
    e = err_of(["eval", "--checkpoint", str(runs / "base"), "--inferences", "aggregated", "--device", "cpu"])
    assert "supports the inferences plain" in e


def test_root_scripts_run_the_same_code(runs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "script.json"
    monkeypatch.setattr(sys, "argv", ["eval_episodes.py", "--checkpoint", str(runs / "base"), "--episodes", "6",
                                      "--n-query", "3", "--device", "cpu", "--quiet", "--output", str(out)])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(ROOT / "eval_episodes.py"), run_name="__main__")
    assert exc.value.code == 0 and len(json.loads(out.read_text())["models"][0]["results"]["plain"]["accuracies"]) == 6
    monkeypatch.setattr(sys, "argv", ["train_meta.py", "--list-configs"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(ROOT / "train_meta.py"), run_name="__main__")
    assert exc.value.code == 0 and "omniglot_conv4_slasd" in capsys.readouterr().out


def test_plot_writes_pngs_and_explains_missing_matplotlib(runs, tmp_path, monkeypatch, capsys):
    import_or_skip("matplotlib", "pip install -e '.[plot]' (or the dev extra)")
    ev = runs / "sd" / "eval_test_3way1shot_8ep_seed0.json"
    assert main(["eval", "--checkpoint", str(runs / "sd"), "--episodes", "8", "--n-query", "3", "--device", "cpu",
                 "--quiet"]) == 0
    assert ev.exists()  # default output: next to the checkpoint
    capsys.readouterr()
    assert main(["plot", str(runs / "sd"), "--output", str(tmp_path)]) == 0
    written = capsys.readouterr().out.split()
    assert sorted(Path(p).name for p in written) == ["curves.png", f"{ev.stem}_hist.png"]
    for p in written:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SystemExit) as exc:
        main(["plot", str(runs / "sd")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install matplotlib" in err
