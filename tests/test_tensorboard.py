"""TensorBoard scalars of run directories: written beside metrics.jsonl with the same numbers by
both pipelines, and nothing (no failure) without the tensorboard package."""

import os

import pytest
from skips import import_or_skip

from fewshot_sla.cli import main
from fewshot_sla.rundir import RunDir


def test_tensorboard_events_written_and_readable(tmp_path):
    import_or_skip("tensorboard", "pip install -e '.[tensorboard]' (or the dev extra)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = RunDir(tmp_path / "run")
    run.log({"kind": "train", "step": 10, "epoch": 1, "loss": 1.25, "lr": 0.1, "name": "x", "best": True})
    run.log({"kind": "train", "step": 20, "epoch": 1, "loss": 0.75, "lr": 0.1})
    run.log({"kind": "val", "step": 20, "acc": {"aggregated": 0.5, "single": 0.25}, "acc_plain": 0.125})
    run.close()
    assert len(run.read_metrics()) == 3
    acc = EventAccumulator(str(run.path))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/epoch", "val/acc_aggregated", "val/acc_single", "val/acc_plain"} <= tags
    assert "train/best" not in tags and "train/name" not in tags and "train/step" not in tags
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(10, 1.25), (20, 0.75)]
    assert [(e.step, e.value) for e in acc.Scalars("val/acc_aggregated")] == [(20, 0.5)]


def _scalar_tags(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return acc, set(acc.Tags()["scalars"])


def test_both_pipelines_write_tensorboard_scalars(tmp_path, fewshot_folder, write_cifar10_batches):
    import_or_skip("tensorboard", "pip install -e '.[tensorboard]' (or the dev extra)")
    meta = tmp_path / "meta"
    assert main(["meta-train", "--dataset", "folder", "--data-root", str(fewshot_folder), "--backbone", "conv4",
                 "--backbone-options", "hidden=4,out_channels=4", "--mode", "sla", "--n-way", "3", "--k-shot", "1",
                 "--n-query", "1", "--episodes-per-epoch", "2", "--tasks-per-batch", "2", "--eval-way", "3",
                 "--eval-shot", "1", "--eval-query", "1", "--val-episodes", "2", "--epochs", "1", "--log-every", "1",
                 "--device", "cpu", "--quiet", "--run-dir", str(meta)]) == 0
    acc, tags = _scalar_tags(meta)
    assert {"train/loss", "train/lr", "val/acc_aggregated", "val/acc_single"} <= tags, tags
    rows = [r for r in RunDir(meta).read_metrics() if r["kind"] == "train"]
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [
        (r["step"], pytest.approx(r["loss"])) for r in rows]
    write_cifar10_batches(tmp_path / "cifar")
    sup = tmp_path / "sup"
    assert main(["supervised", "--data-root", str(tmp_path / "cifar"), "--backbone", "conv4", "--backbone-options",
                 "hidden=4,out_channels=4", "--batch-size", "8", "--no-progress", "--no-plot", "--device", "cpu",
                 "--mode", "sla", "--iterations", "2", "--eval-every", "2", "--val-size", "20", "--log-every", "1",
                 "--out-dir", str(sup)]) == 0
    _, tags = _scalar_tags(sup)
    assert any(t.startswith("train/") for t in tags) and any(t.startswith("val/acc_") for t in tags), tags


def test_no_tensorboard_no_events_and_no_failure(tmp_path, monkeypatch):
    import fewshot_sla.rundir as rundir

    monkeypatch.setattr(rundir, "_tensorboard_writer", lambda path: None)  # as if not installed
    run = RunDir(tmp_path / "run")
    run.log({"kind": "train", "step": 1, "loss": 1.0})
    run.close()
    assert sorted(os.listdir(run.path)) == ["metrics.jsonl"]
    off = RunDir(tmp_path / "off", tensorboard=False)
    off.log({"kind": "train", "step": 1, "loss": 1.0})
    assert sorted(os.listdir(off.path)) == ["metrics.jsonl"]
