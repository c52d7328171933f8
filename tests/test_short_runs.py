"""Runs shorter than the logging interval (``--log-every`` 100 by default) finish with exit 0, a
summary and a train row at their last step holding the mean of every step (the reference: the
same run logged at every step, averaged by hand)."""

import json

import pytest

from fewshot_sla.cli import main
from fewshot_sla.rundir import RunDir


def sup_args(root, run, *extra):
    return ["supervised", "--dataset", "folder", "--data-root", str(root), "--backbone", "conv4", "--backbone-options",
            "hidden=4,out_channels=4", "--mode", "sla", "--iterations", "30", "--batch-size", "32", "--no-progress",
            "--device", "cpu", "--num-threads", "1", "--run-dir", str(run), *extra]


def meta_args(root, run, *extra):
    return ["meta-train", "--dataset", "folder", "--data-root", str(root), "--backbone", "conv4", "--backbone-options",
            "hidden=8,out_channels=8", "--head", "protonet", "--mode", "sla", "--n-way", "3", "--k-shot", "1",
            "--n-query", "2", "--episodes-per-epoch", "6", "--tasks-per-batch", "2", "--val-episodes", "0",
            "--test-episodes", "0", "--epochs", "2", "--device", "cpu", "--num-threads", "1", "--quiet", "--run-dir",
            str(run), *extra]


def train_rows(run):
    return [r for r in RunDir(run).read_metrics() if r["kind"] == "train"]


def test_a_supervised_run_shorter_than_the_logging_interval_finishes(fewshot_folder, tmp_path, capsys):
    # the case: a few-shot dataset (no validation split of its classes, no test images), 30 iterations
    assert main(sup_args(fewshot_folder, tmp_path / "short")) == 0  # plots curves.png too
    assert "run directory:" in capsys.readouterr().out
    assert json.loads((tmp_path / "short" / "summary.json").read_text())["best_iteration"] == 30
    assert (tmp_path / "short" / "curves.png").stat().st_size > 0
    (row,) = train_rows(tmp_path / "short")
    assert row["step"] == 30 and row["steps"] == 30
    assert main(sup_args(fewshot_folder, tmp_path / "every", "--log-every", "1", "--no-plot")) == 0
    every = train_rows(tmp_path / "every")
    assert [r["step"] for r in every] == list(range(1, 31))
    for key in ("loss", "acc", "loss_joint"):
        assert row[key] == pytest.approx(sum(r[key] for r in every) / 30, rel=1e-6)


def test_a_meta_train_run_shorter_than_the_logging_interval_finishes(fewshot_folder, tmp_path):
    assert main(meta_args(fewshot_folder, tmp_path / "short")) == 0  # 3 steps an epoch, --log-every 100
    summary = json.loads((tmp_path / "short" / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["epochs"] == 2
    rows = train_rows(tmp_path / "short")
    assert [(r["step"], r["steps"]) for r in rows] == [(3, 3), (6, 3)]  # each epoch's last step
    assert main(meta_args(fewshot_folder, tmp_path / "every", "--log-every", "1")) == 0
    every = train_rows(tmp_path / "every")
    for row, part in zip(rows, (every[:3], every[3:])):
        assert row["loss"] == pytest.approx(sum(r["loss"] for r in part) / 3, rel=1e-6)
