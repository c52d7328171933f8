"""meta-train's final test: best.pt tested at the end as ``fewshot-sla eval`` tests it (RUN/test.json, the
last output line), never changing the trained weights; ``--test-episodes 0`` turns it off; ``--resume``
of a finished run tests without training; refusals before training. Tiny synthetic image folder."""

import contextlib
import io
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from synthetic import synthetic_dataset

from fewshot_sla.cli import main
from fewshot_sla.meta.config import EvalConfig, MetaTrainConfig
from fewshot_sla.meta.cross_domain import resolve_target
from fewshot_sla.meta.evaluate import evaluate
from fewshot_sla.meta.train import train


def train_args(root, run, *extra):
    return ["meta-train", "--dataset", "folder", "--data-root", str(root), "--backbone", "conv4",
            "--backbone-options", "hidden=8,out_channels=8", "--n-way", "3", "--k-shot", "1", "--n-query", "2",
            "--episodes-per-epoch", "6", "--tasks-per-batch", "2", "--eval-way", "3", "--eval-shot", "1",
            "--eval-query", "3", "--val-episodes", "6", "--lr", "0.05", "--epochs", "2", "--device", "cpu",
            "--run-dir", str(run), *extra]


def run_cli(argv):
    """(exit status, stdout lines) of ``fewshot-sla ARGV``."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue().splitlines()


@pytest.fixture(scope="module")
def runs(fewshot_folder, tmp_path_factory):
    """The same run trained with the default final test ("tested") and with ``--test-episodes 0``."""
    base = tmp_path_factory.mktemp("final")
    tested = run_cli(train_args(fewshot_folder, base / "tested"))
    untested = run_cli(train_args(fewshot_folder, base / "untested", "--test-episodes", "0"))
    assert tested[0] == untested[0] == 0
    return base, tested[1], untested[1]


def _by_hand(values):
    n = len(values)
    mean = sum(values) / n
    return mean, 1.96 * math.sqrt(sum((v - mean) ** 2 for v in values) / n) / math.sqrt(n)


def test_the_last_line_is_the_test_of_best_pt_written_to_test_json(runs):
    base, lines, _ = runs
    run = base / "tested"
    report = json.loads((run / "test.json").read_text())
    (model,) = report["models"]
    assert MetaTrainConfig().test_episodes == 1000 and report["episodes"] == 1000
    assert model["checkpoint"] == str(run / "best.pt") and model["reported"] == "aggregated"
    assert (report["split"], report["n_way"], report["k_shot"], report["n_query"], report["seed"]) == \
        ("test", 3, 1, 3, 0)
    accs = model["results"]["aggregated"]["accuracies"]
    mean, ci = _by_hand(accs)
    assert len(accs) == 1000 and lines[-1] == (f"test aggregated {100 * mean:.2f} +- {100 * ci:.2f}% (1000 test "
                                               f"episodes, 3-way 1-shot, seed 0): {run / 'test.json'}")
    # the same numbers in summary.json and in a final metrics row
    summary = json.loads((run / "summary.json").read_text())
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["kind"] == "test" and rows[-1]["final"] and rows[-1]["episodes"] == 1000
    for inference, r in model["results"].items():
        assert summary["test"][inference]["mean"] == r["mean"] == rows[-1][f"acc_{inference}"]
        assert summary["test"][inference]["ci95"] == r["ci95"] == rows[-1][f"ci95_{inference}"]
    assert summary["test_report"] == str(run / "test.json") and summary["test_line"] == lines[-1]


def test_test_json_is_what_eval_gives_on_the_same_episodes(runs, tmp_path):
    base, _, _ = runs
    run = base / "tested"
    report = json.loads((run / "test.json").read_text())
    out = tmp_path / "eval.json"
    code, _ = run_cli(["eval", "--checkpoint", str(run / "best.pt"), "--split", "test", "--episodes", "1000",
                       "--n-way", "3", "--k-shot", "1", "--n-query", "3", "--device", "cpu", "--quiet",
                       "--output", str(out)])
    assert code == 0
    again = json.loads(out.read_text())
    assert again["models"][0]["results"] == report["models"][0]["results"]  # every per-episode accuracy
    assert again["models"][0]["sha256"] == report["models"][0]["sha256"]
    assert again["fingerprint"] == report["fingerprint"] and again["record"]["protocol"] == report["record"]["protocol"]
    # the command the report names reproduces it
    assert report["command"] == (f"fewshot-sla eval --checkpoint {run / 'best.pt'} --split test --episodes 1000 "
                                 "--n-way 3 --k-shot 1 --n-query 3 --seed 0")


def _model_state(path):
    ckpt = torch.load(path, weights_only=True)
    return ckpt["model"], ckpt["optimizer"]["state"], ckpt["rng"]


def _no_time(run):
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in rows if r["kind"] != "test"]


def test_test_episodes_0_writes_no_test_and_the_test_leaves_training_bit_for_bit(runs):
    base, tested_lines, lines = runs
    a, b = base / "tested", base / "untested"
    assert not (b / "test.json").exists() and "test" not in json.loads((b / "summary.json").read_text())
    assert all(json.loads(x)["kind"] != "test" for x in (b / "metrics.jsonl").read_text().splitlines())
    assert lines[-1] == f"best val aggregated {lines[-1].split()[3]} at epoch 2; run directory {b}"
    assert tested_lines[-2].startswith("best val aggregated ") and tested_lines[-2].endswith(f"run directory {a}")
    for name in ("best.pt", "last.pt"):
        (wa, oa, ra), (wb, ob, rb) = _model_state(a / name), _model_state(b / name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        assert all(torch.equal(oa[i]["momentum_buffer"], ob[i]["momentum_buffer"]) for i in oa)
        assert torch.equal(ra["torch"], rb["torch"])
    assert _no_time(a) == _no_time(b)


def test_resume_of_a_finished_run_tests_it_without_training(runs, tmp_path):
    base, _, _ = runs
    run = tmp_path / "untested"
    shutil.copytree(base / "untested", run)
    before = {n: (run / n).read_bytes() for n in ("best.pt", "last.pt")}
    rows = _no_time(run)
    code, lines = run_cli(["meta-train", "--resume", str(run), "--test-episodes", "1000", "--quiet"])
    assert code == 0 and {n: (run / n).read_bytes() for n in before} == before  # no step taken
    assert _no_time(run) == rows
    tested = json.loads((base / "tested" / "test.json").read_text())["models"][0]["results"]
    assert json.loads((run / "test.json").read_text())["models"][0]["results"] == tested
    assert lines[-1].startswith("test aggregated ") and lines[-1].endswith(str(run / "test.json"))
    assert json.loads((run / "config.json").read_text())["test_episodes"] == 1000
    # once more: the saved 1000 episodes again, one test row (the previous one is replaced)
    assert run_cli(["meta-train", "--resume", str(run), "--quiet"])[0] == 0
    assert [json.loads(x)["kind"] for x in (run / "metrics.jsonl").read_text().splitlines()].count("test") == 1


def test_the_final_test_is_refused_before_training(fewshot_folder, tmp_path, capsys):
    code = main_code(train_args(fewshot_folder, tmp_path / "a", "--test-split", "train"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["fewshot-sla meta-train: error: --test-split train shares 8 of its 8 classes "
                                 "with the training classes (tr000, tr001, tr002, ...); pass a split the run "
                                 "does not train on as --test-split, or --test-episodes 0"]
    no_test = tmp_path / "no_test"
    for split in ("train", "val"):
        shutil.copytree(Path(fewshot_folder) / split, no_test / split)
    code = main_code(train_args(no_test, tmp_path / "b"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"fewshot-sla meta-train: error: folder: {no_test} has split folders ['train', "
                                 "'val'] but none for 'test'; the final test reads --test-split test: pass "
                                 "--test-episodes 0 to train without it"]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing trained
    assert main_code(train_args(no_test, tmp_path / "c", "--test-episodes", "0", "--quiet")) == 0


def main_code(argv):
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def test_a_maml_run_is_tested_per_episode_as_eval_tests_it(tmp_path):
    """A gradient learner (features depend on the episode) through the final test: the same accuracies as
    ``evaluate`` with an EvalConfig written out here."""
    data = {"train": synthetic_dataset(8, 10, 16, 1, seed=0), "val": synthetic_dataset(6, 10, 16, 1, seed=1,
                                                                                          prefix="val"),
            "test": synthetic_dataset(6, 10, 16, 1, seed=2, prefix="te")}
    cfg = MetaTrainConfig(
        dataset="synthetic", backbone="conv4", backbone_options={"hidden": 8, "out_channels": 8}, learner="maml",
        classifier_init="zero", mode="sla", transforms="rotation", inner_lr=0.1, inner_steps=1, inner_steps_test=2,
        n_way=3, k_shot=1, n_query=2, episodes_per_epoch=4, tasks_per_batch=2, eval_way=3, eval_shot=1,
        eval_query=2, val_episodes=2, epochs=1, lr=0.01, optimizer="adam", weight_decay=0.0, lr_milestones=(),
        lr_factors=(1.0,), run_dir=str(tmp_path / "run"), quiet=True, device="cpu", test_episodes=12)
    summary = train(cfg, datasets=data)
    report = json.loads((tmp_path / "run" / "test.json").read_text())
    assert report["models"][0]["features"].startswith("per episode") and report["models"][0]["learner"] == "maml"
    ecfg = EvalConfig(checkpoint=str(tmp_path / "run" / "best.pt"), episodes=12, n_way=3, k_shot=1, n_query=2,
                      device="cpu", quiet=True, output=str(tmp_path / "eval.json"))
    key = resolve_target("", "", {}, cfg).key("test")
    again = evaluate(ecfg, datasets={key: data["test"]})
    assert again["models"][0]["results"] == report["models"][0]["results"]
    assert summary["test"]["aggregated"]["n"] == 12
