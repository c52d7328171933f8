"""SIGINT and SIGTERM during training: the step finishes, last.pt is written at it, the run exits
with one line and 128 + the signal, and ``--resume`` ends exactly where an uninterrupted run ends.

The reference is an uninterrupted run of the same command; the interrupted run is a real
subprocess (tests/run_child.py) that sends itself the signal with ``os.kill`` after a mid-epoch
step drawn at random (seeded per case); its resume must give a ``last.pt`` whose every tensor is
``torch.equal`` to the reference's (model, optimiser, scheduler, RNG, meters) and the same
metrics rows apart from their time fields.
"""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fewshot_sla.cli import main
from fewshot_sla.engine.interrupt import RunInterrupted, StopSignals, interrupted_message
from fewshot_sla.rundir import load_checkpoint

CHILD = str(Path(__file__).with_name("run_child.py"))
META_STEPS_PER_EPOCH, META_EPOCHS = 6, 3  # 12 episodes per epoch, 2 per step
SUP_ITERS_PER_EPOCH, SUP_EPOCHS = 7, 2  # 100 training images, batches of 16 (the last of an epoch: 4)


def meta_args(data_root, run_dir):
    return ["meta-train", "--dataset", "folder", "--data-root", str(data_root), "--backbone", "conv4",
            "--backbone-options", "hidden=8,out_channels=8", "--head", "protonet", "--mode", "sla+sd",
            "--n-way", "3", "--k-shot", "1", "--n-query", "2", "--episodes-per-epoch", "12", "--tasks-per-batch",
            "2", "--eval-way", "3", "--eval-shot", "1", "--eval-query", "3", "--val-episodes", "6",
            "--epochs", str(META_EPOCHS), "--lr", "0.05", "--lr-milestones", "1", "--lr-factors", "1", "0.1",
            "--log-every", "4", "--device", "cpu", "--num-threads", "1", "--quiet", "--run-dir", str(run_dir)]


def sup_args(data_root, run_dir):
    return ["supervised", "--data-root", str(data_root), "--backbone", "conv4", "--backbone-options",
            "hidden=4,out_channels=4", "--mode", "sla", "--batch-size", "16", "--epochs", str(SUP_EPOCHS),
            "--eval-every", "1", "--val-size", "20", "--log-every", "3", "--no-progress", "--no-plot",
            "--device", "cpu", "--num-threads", "1", "--run-dir", str(run_dir)]


PIPELINES = {
    "meta-train": (meta_args, META_STEPS_PER_EPOCH, META_STEPS_PER_EPOCH * META_EPOCHS),
    "supervised": (sup_args, SUP_ITERS_PER_EPOCH, SUP_ITERS_PER_EPOCH * SUP_EPOCHS),
}


@pytest.fixture(scope="module")
def roots(fewshot_folder, tmp_path_factory):
    from conftest import _write_cifar10_batches

    cifar = tmp_path_factory.mktemp("cifar")
    _write_cifar10_batches(cifar)
    return {"meta-train": fewshot_folder, "supervised": cifar}


@pytest.fixture(scope="module")
def references(roots, tmp_path_factory):
    """Uninterrupted runs of both pipelines."""
    base = tmp_path_factory.mktemp("straight")
    for name, (args, _, _) in PIPELINES.items():
        assert main(args(roots[name], base / name)) == 0
    return base


def run_child(hooks, argv, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, CHILD, *hooks, "--", *argv], capture_output=True, text=True, env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def assert_same(a, b, where=""):
    """Equal nested checkpoint contents: tensors by torch.equal, arrays by array_equal, the rest by ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def comparable(ckpt):
    """A checkpoint less what differs between two runs of one command: its run directory and clock."""
    ckpt = dict(ckpt)
    ckpt["config"] = {k: v for k, v in ckpt["config"].items() if k != "run_dir"}
    ckpt.pop("train_time", None)
    return ckpt


def rows(run_dir):
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "time"} for x in lines]


CASES = [("meta-train", "SIGTERM", None), ("meta-train", "SIGINT", None),
         ("supervised", "SIGTERM", None), ("supervised", "SIGINT", "SIGTERM")]


@pytest.mark.parametrize("command,sig,again", CASES)
def test_signal_mid_epoch_then_resume_equals_an_uninterrupted_run(roots, references, tmp_path, command, sig, again):
    args, per_epoch, total = PIPELINES[command]
    k = random.Random(f"{command}:{sig}").choice([s for s in range(1, total) if s % per_epoch])  # mid-epoch
    run = tmp_path / "run"
    hooks = ["--signal-at", f"{k}:{sig}"] + (["--again", again] if again else [])
    proc = run_child(hooks, args(roots[command], run))
    signum = getattr(signal, sig)
    assert proc.returncode == 128 + signum == {"SIGINT": 130, "SIGTERM": 143}[sig], proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == \
        f"interrupted at step {k} of {total} ({sig}); resume with: fewshot-sla {command} --resume {run}"
    if again:  # a second signal while last.pt was written: noted, and last.pt is whole (it loads and resumes)
        assert f"{again} received again" in proc.stderr
    last = load_checkpoint(run / "last.pt")
    assert last["step" if command == "meta-train" else "iteration"] == k  # that step, not the epoch's
    assert max(r["step"] for r in rows(run)) <= k  # metrics flushed up to the step, nothing later
    assert not (run / "summary.json").exists() and not (run / ".lock").exists()

    assert main([command, "--resume", str(run)] + (["--no-plot"] if command == "supervised" else [])) == 0
    ref = references / command
    assert_same(comparable(load_checkpoint(ref / "last.pt")), comparable(load_checkpoint(run / "last.pt")))
    assert_same(load_checkpoint(ref / "best.pt")["model"], load_checkpoint(run / "best.pt")["model"])
    assert rows(ref) == rows(run)
    assert any(r["kind"] == "val" for r in rows(run))  # validation rounds are part of the comparison


def test_stop_signals_record_the_first_signal_and_restore_the_handlers(capsys):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with StopSignals() as stop:
        assert stop.received is None
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to this (main) thread before the next line runs
        assert stop.received == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.received == signal.SIGTERM  # the first one counts
    assert "SIGINT received again" in capsys.readouterr().err
    assert {s: signal.getsignal(s) for s in before} == before


def test_an_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as nohup / a background job
    try:
        with StopSignals() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.received is None
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_interrupted_line_and_exit_codes():
    line = interrupted_message(signal.SIGTERM, 1234, 6000, "meta-train", "RUN")
    assert line == "interrupted at step 1234 of 6000 (SIGTERM); resume with: fewshot-sla meta-train --resume RUN"
    assert RunInterrupted(signal.SIGINT, line).exit_code == 130
    assert RunInterrupted(signal.SIGTERM, line).exit_code == 143
