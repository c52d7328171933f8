"""One live run per run directory: a second ``meta-train``, ``supervised`` or ``--resume`` into a
folder a live run holds is refused in one line naming the holder's PID, leaving every byte of the
live run's files as it was; ``eval`` of the live run's ``best.pt`` still works; a run killed with
SIGKILL leaves a folder the next run takes. The live run is a real subprocess (tests/run_child.py)
paused after its first checkpoint; the references are its PID and a byte-for-byte snapshot."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fewshot_sla.cli import main
from fewshot_sla.config import ConfigError
from fewshot_sla.rundir import RunDir
from fewshot_sla.runlock import LOCK_NAME, RunDirLocked, RunLock, check_not_locked

CHILD = str(Path(__file__).with_name("run_child.py"))


def meta_args(data_root, run_dir, *extra):
    return ["meta-train", "--dataset", "folder", "--data-root", str(data_root), "--backbone", "conv4",
            "--backbone-options", "hidden=8,out_channels=8", "--head", "protonet", "--mode", "baseline",
            "--n-way", "3", "--k-shot", "1", "--n-query", "2", "--episodes-per-epoch", "4", "--tasks-per-batch",
            "2", "--eval-way", "3", "--eval-shot", "1", "--eval-query", "3", "--val-episodes", "4", "--epochs", "2",
            "--log-every", "1", "--device", "cpu", "--num-threads", "1", "--quiet", "--run-dir", str(run_dir), *extra]


def start_paused(hook, argv):
    """A run in a subprocess, returned once it has printed "paused" (it then waits for a line on stdin)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen([sys.executable, CHILD, *hook, "--", *argv], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if line.strip() != "paused":
        proc.kill()
        raise AssertionError(f"the run did not pause: {line!r} {proc.stderr.read()[-2000:]}")
    return proc


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


def refused(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    return err.strip()


def test_a_live_runs_folder_refuses_a_second_run_and_keeps_its_files(fewshot_folder, tmp_path, capsys):
    run = tmp_path / "run"
    live = start_paused(["--pause-after-save"], meta_args(fewshot_folder, run))  # paused after epoch 1's checkpoint
    try:
        before = snapshot(run)
        assert {"config.json", "metrics.jsonl", "last.pt", "best.pt", LOCK_NAME} <= set(before)
        line = (f"run directory {run} is in use by a live run (pid {live.pid}); wait for it to end (or stop it), "
                "or choose another --run-dir")
        assert refused(meta_args(fewshot_folder, run), capsys) == f"fewshot-sla meta-train: error: {line}"
        assert refused(["meta-train", "--resume", str(run)], capsys) == f"fewshot-sla meta-train: error: {line}"
        sup = ["supervised", "--dataset", "folder", "--data-root", str(fewshot_folder), "--backbone", "conv4",
               "--iterations", "2", "--device", "cpu", "--no-plot", "--run-dir", str(run)]
        assert refused(sup, capsys) == f"fewshot-sla supervised: error: {line}"
        assert refused(["supervised", "--resume", str(run)], capsys) == f"fewshot-sla supervised: error: {line}"
        # eval reads the live run's best.pt (it never locks)
        assert main(["eval", "--checkpoint", str(run / "best.pt"), "--data-root", str(fewshot_folder), "--split",
                     "val", "--episodes", "4", "--n-query", "3", "--device", "cpu", "--quiet",
                     "--output", str(tmp_path / "e.json")]) == 0
        assert "+-" in capsys.readouterr().out
        assert snapshot(run) == before  # every file of the live run, byte for byte
    finally:
        out, err = live.communicate("go\n", timeout=120)
    assert live.returncode == 0, err[-2000:]
    steps = [r["step"] for r in RunDir(run).read_metrics() if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4]  # one run's rows, none interleaved
    assert not (run / LOCK_NAME).exists()  # removed when the run ended


def test_a_killed_runs_folder_is_taken_by_the_next_run(fewshot_folder, tmp_path, capsys):
    run = tmp_path / "run"
    dead = start_paused(["--pause-at", "1"], meta_args(fewshot_folder, run))  # before any checkpoint
    dead.kill()  # SIGKILL: no handler runs, the lock file stays
    dead.wait(timeout=60)
    dead.stdin.close()
    dead.stdout.close()
    dead.stderr.close()
    assert dead.returncode == -signal.SIGKILL
    assert (run / LOCK_NAME).read_text().split()[0] == str(dead.pid)  # stale, but the kernel lock died
    check_not_locked(run)
    assert main(meta_args(fewshot_folder, run)) == 0
    assert [r["step"] for r in RunDir(run).read_metrics() if r["kind"] == "train"] == [1, 2, 3, 4]


def test_run_lock_in_one_process(tmp_path):
    first = RunLock().acquire(tmp_path / "new" / "run")
    assert first.held and first.created_dir
    assert (tmp_path / "new" / "run" / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    with pytest.raises(RunDirLocked, match=rf"in use by a live run \(pid {os.getpid()}\)"):
        RunLock().acquire(tmp_path / "new" / "run")  # flock: a second open file description conflicts
    with pytest.raises(RunDirLocked):
        check_not_locked(tmp_path / "new" / "run")
    first.release(remove_dir=True)  # created by it and empty: gone
    assert not (tmp_path / "new" / "run").exists()
    again = RunLock().acquire(tmp_path / "new" / "run")
    check_not_locked(tmp_path / "new")  # no lock file there: free
    again.release()
    assert list((tmp_path / "new" / "run").iterdir()) == []


def test_a_run_dir_that_cannot_be_created_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"cannot write the run folder .*file/run \(.*\); choose another "):
        RunLock().acquire(tmp_path / "file" / "run")


def test_a_refused_start_leaves_no_folder(fewshot_folder, tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as e:  # the data has 8 classes: refused after the lock was taken
        main(meta_args(fewshot_folder, run, "--n-way", "50"))
    assert e.value.code == 2 and "--n-way" in capsys.readouterr().err
    assert not run.exists()
