"""Failures: every user error is one line with exit status 2 naming the path or option; atomic
writes survive a full disk and follow the umask; run directories start clean and say why they
cannot be resumed; non-finite losses and weights are refused."""

import dataclasses
import errno
import math
import os
import stat
import urllib.error

import pytest
import torch

from fewshot_sla.atomic import NoSpaceError, atomic_torch_save, atomic_write, atomic_write_text
from fewshot_sla.cli import main
from fewshot_sla.cli_options import COMMANDS
from fewshot_sla.config import (
    COMMAND_CONFIGS,
    ConfigError,
    build_config,
    check_config_command,
    config_command,
    list_named_configs,
)
from fewshot_sla.guards import NonFiniteLossError, check_finite_loss
from fewshot_sla.rundir import NonFiniteStateError, RunDir, check_finite_state, load_checkpoint


def one_line_error(capsys, argv, *needles):
    """Run the CLI; it must exit 2 with one line on stderr, no traceback, holding every needle."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# --------------------------------------------------------------------------- --download offline
def test_download_offline_is_one_line(tmp_path, capsys, monkeypatch):
    import fewshot_sla.data.download as download

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(download, "urlopen", offline)  # no real network call
    root = tmp_path / "data"
    line = one_line_error(
        capsys,
        ["meta-train", "--config", "omniglot_conv4_sla", "--download", "--data-root", str(root),
         "--run-dir", str(tmp_path / "run"), "--quiet"],
        "cannot download", "images_background.zip", str(root / "images_background.zip"), "by hand",
    )
    assert line.startswith("fewshot-sla meta-train: error:")
    assert [p.name for p in root.iterdir()] == []  # no partial download left behind


# --------------------------------------------------------------------------- disk full
def test_disk_full_keeps_previous_checkpoint_with_one_line(tmp_path):
    run = RunDir(tmp_path / "run")
    run.save({"w": torch.ones(3)})

    def full(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(NoSpaceError) as exc:
        atomic_write(run.last, full)
    msg = str(exc.value)
    assert "\n" not in msg
    assert f"no space left on {run.path}" in msg and "previous last.pt kept" in msg
    assert sorted(os.listdir(run.path)) == ["last.pt"]  # the temporary file is gone
    assert torch.equal(load_checkpoint(run.last)["w"], torch.ones(3))  # previous checkpoint still loads


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_disk_full_while_appending_metrics_is_one_line(tmp_path):
    run = RunDir(tmp_path / "run", tensorboard=False)
    (run.path / "metrics.jsonl").symlink_to("/dev/full")  # every write: ENOSPC
    with pytest.raises(NoSpaceError, match=f"no space left on {run.path} while appending to metrics.jsonl"):
        run.log({"kind": "train", "step": 1, "loss": 1.0})


def test_torch_serializer_failure_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    import shutil

    import fewshot_sla.atomic as atomic

    atomic_torch_save({"w": torch.ones(2)}, tmp_path / "last.pt")

    def enforce_fail(f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    with pytest.raises(RuntimeError, match="enforce fail"):  # disk not full: torch's own error stays
        atomic_write(tmp_path / "last.pt", enforce_fail)
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 4096))
    with pytest.raises(NoSpaceError, match=f"no space left on {tmp_path} while writing last.pt, previous last.pt kept"):
        atomic_write(tmp_path / "last.pt", enforce_fail)
    assert torch.equal(load_checkpoint(tmp_path / "last.pt")["w"], torch.ones(2))


def test_disk_full_during_torch_save_through_the_cli_is_one_line(tmp_path, capsys, monkeypatch, fewshot_folder):
    import fewshot_sla.atomic as atomic

    real = atomic.atomic_write
    calls = {"n": 0}

    def atomic_write_then_full(path, write):
        if str(path).endswith(".pt"):
            calls["n"] += 1
            if calls["n"] > 2:  # epoch 1's last.pt and best.pt go through, epoch 2's last.pt hits a full disk

                def write(f):
                    raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, write)

    monkeypatch.setattr(atomic, "atomic_write", atomic_write_then_full)
    run_dir = tmp_path / "run"
    one_line_error(
        capsys,
        ["meta-train", "--dataset", "folder", "--data-root", str(fewshot_folder), "--backbone", "conv4",
         "--backbone-options", "hidden=4,out_channels=4", "--n-way", "3", "--k-shot", "1", "--n-query", "1",
         "--episodes-per-epoch", "2", "--tasks-per-batch", "2", "--eval-way", "3", "--eval-shot", "1",
         "--eval-query", "1", "--val-episodes", "2", "--epochs", "2", "--device", "cpu", "--quiet",
         "--run-dir", str(run_dir)],
        f"no space left on {run_dir} while writing last.pt, previous last.pt kept",
    )
    assert load_checkpoint(run_dir / "last.pt")["epoch"] >= 0  # the first checkpoint still loads


# --------------------------------------------------------------------------- file modes
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        run = RunDir(tmp_path / "run", tensorboard=False)
        run.save({"w": torch.ones(1)}, best=True)
        run.write_json("summary.json", {"a": 1})
        run.log({"kind": "train", "step": 1, "loss": 0.5})
        atomic_write_text(tmp_path / "x.txt", "x")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    for p in (run.last, run.best, run.path / "summary.json", tmp_path / "x.txt", run.path / "metrics.jsonl"):
        assert stat.S_IMODE(p.stat().st_mode) == expected, (p.name, oct(p.stat().st_mode))


# --------------------------------------------------------------------------- unreadable checkpoints
def test_eval_on_empty_directory_and_garbage_file_is_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(capsys, ["eval", "--checkpoint", str(empty)], f"{empty} holds no best.pt or last.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("garbage\n")
    one_line_error(capsys, ["eval", "--checkpoint", str(garbage)], f"{garbage} is not a fewshot-sla checkpoint")
    one_line_error(capsys, ["supervised", "--evaluate", str(garbage)], f"{garbage} is not a fewshot-sla checkpoint")
    atomic_torch_save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="list.pt is not a fewshot-sla checkpoint"):
        load_checkpoint(tmp_path / "list.pt")


def test_check_finite_state_names_file_and_tensor(tmp_path):
    good = {"a.weight": torch.ones(2), "a.num_batches_tracked": torch.tensor(3)}
    check_finite_state(good, tmp_path / "best.pt")
    bad = {**good, "b.weight": torch.tensor([1.0, float("nan"), float("inf")]), "c.weight": torch.tensor([math.nan])}
    with pytest.raises(NonFiniteStateError) as exc:
        check_finite_state(bad, tmp_path / "best.pt")
    msg = str(exc.value)
    assert isinstance(exc.value, ValueError) and "\n" not in msg
    assert str(tmp_path / "best.pt") in msg and "b.weight" in msg and "2 of 3" in msg and "c.weight" not in msg


def test_eval_refuses_a_checkpoint_with_non_finite_weights(tmp_path, capsys, fewshot_folder):
    run = tmp_path / "run"
    assert main(["meta-train", "--dataset", "folder", "--data-root", str(fewshot_folder), "--backbone", "conv4",
                 "--backbone-options", "hidden=4,out_channels=4", "--n-way", "3", "--k-shot", "1", "--n-query", "1",
                 "--episodes-per-epoch", "2", "--tasks-per-batch", "2", "--eval-way", "3", "--eval-shot", "1",
                 "--eval-query", "1", "--val-episodes", "2", "--epochs", "1", "--device", "cpu", "--quiet",
                 "--run-dir", str(run)]) == 0
    ckpt = torch.load(run / "best.pt", weights_only=False)
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][name] = torch.full_like(ckpt["model"][name], float("nan"))  # as a diverged run would save
    torch.save(ckpt, run / "best.pt")
    capsys.readouterr()
    one_line_error(capsys, ["eval", "--checkpoint", str(run), "--episodes", "2", "--n-way", "3", "--k-shot", "1",
                            "--device", "cpu"], f"{run / 'best.pt'} holds non-finite weights ({name}:")


# --------------------------------------------------------------------------- config for the other command
def test_config_of_the_other_command_is_one_line(tmp_path, capsys):
    one_line_error(capsys, ["meta-train", "--config", "supervised_cifar10"],
                   "supervised_cifar10 is a supervised config; use fewshot-sla supervised --config supervised_cifar10")
    one_line_error(capsys, ["supervised", "--config", "omniglot_conv4_sla"], "omniglot_conv4_sla is a meta-train "
                   "config; use fewshot-sla meta-train --config omniglot_conv4_sla")
    f = tmp_path / "mine.toml"
    f.write_text("batch_size = 64\niterations = 100\n")
    assert config_command(f) == "supervised"
    one_line_error(capsys, ["meta-train", "--config", str(f)], f"{f} is a supervised config")
    f.write_text("lr = 0.1\n")  # nothing tells: left to the normal checks
    assert config_command(f) is None
    check_config_command(f, "meta-train")
    check_config_command(None, "supervised")


def test_config_command_is_told_by_the_option_names_of_the_registered_config_classes(tmp_path):
    from fewshot_sla.config import CONFIG_DIR

    for name in list_named_configs():  # the naming convention agrees with the keys of every shipped config
        expected = "supervised" if name.startswith("supervised") else "meta-train"
        assert config_command(name) == config_command(CONFIG_DIR / f"{name}.toml") == expected, name

    @dataclasses.dataclass
    class Toy:
        lr: float = 0.1
        toy_steps: int = 1

    f = tmp_path / "toy.toml"
    f.write_text("lr = 0.2\ntoy_steps = 3\n")
    assert config_command(f) is None  # no command has toy_steps
    COMMAND_CONFIGS.register("toy")(Toy)
    try:
        assert config_command(f) == "toy"
        with pytest.raises(ConfigError, match=f"{f} is a toy config; use fewshot-sla toy --config {f}"):
            check_config_command(f, "meta-train")
    finally:
        del COMMAND_CONFIGS["toy"]


# --------------------------------------------------------------------------- blame the option
def test_bad_command_line_value_blames_the_option_not_the_config(capsys):
    for argv in (["supervised", "--config", "supervised_cifar10", "--eval-every", "0"],
                 ["supervised", "--eval-every", "0"]):
        line = one_line_error(capsys, argv, "--eval-every 0")
        assert "invalid command-line option --eval-every 0:" in line and "invalid config" not in line


@dataclasses.dataclass
class _Strict:
    n: int = 1
    progress: bool = True

    def __post_init__(self):
        if not self.progress:
            raise ConfigError("--no-progress is not allowed here")


def test_blame_goes_to_the_config_file_when_it_is_the_bad_one(tmp_path):
    from fewshot_sla.supervised.config import SupervisedConfig

    f = tmp_path / "bad.toml"
    f.write_text("eval_every = 0\n")
    with pytest.raises(ConfigError, match=f"invalid config {f}: --eval-every"):
        build_config(SupervisedConfig, {"lr": 0.05}, config=f)
    # a combination: each option alone is fine with the defaults, together they are not -> both named
    with pytest.raises(ConfigError, match="invalid command-line options --mode baseline, --transforms rotation: "):
        build_config(SupervisedConfig, {"progress": False, "mode": "baseline", "lr": 0.5, "transforms": "rotation"})
    with pytest.raises(ConfigError, match="invalid command-line option --no-progress: "):
        build_config(_Strict, {"progress": False, "n": 3})


# --------------------------------------------------------------------------- run directories
def test_start_fresh_drops_the_dead_runs_rows(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_json("config.json", {"a": 1})
    run.log({"kind": "train", "step": 5, "loss": 1.0})  # a run killed before its first checkpoint
    run.close()
    again = RunDir(tmp_path / "run", tensorboard=False)
    again.start_fresh()
    assert not list(again.path.glob("events.out.tfevents.*"))  # the dead run's TensorBoard events too
    assert (again.path / "config.json").exists()
    again.log({"kind": "train", "step": 1, "loss": 2.0})
    assert again.read_metrics() == [{"kind": "train", "step": 1, "loss": 2.0}]
    RunDir(tmp_path / "other", enabled=False).start_fresh()  # other ranks: a no-op
    assert not (tmp_path / "other").exists()


def test_require_checkpoint_says_why(tmp_path):
    with pytest.raises(FileNotFoundError, match="--resume .*missing: no such directory"):
        RunDir(tmp_path / "missing", enabled=False).require_checkpoint()
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError, match="plain: not a run directory"):
        RunDir(tmp_path / "plain", enabled=False).require_checkpoint()
    run = RunDir(tmp_path / "dead")
    run.write_json("config.json", {"a": 1})
    with pytest.raises(FileNotFoundError) as exc:
        run.require_checkpoint("--resume")
    msg = str(exc.value)
    assert "the run never wrote a checkpoint" in msg and "start it again without --resume" in msg
    assert "\n" not in msg
    run.save({"w": torch.ones(1)})
    assert run.require_checkpoint() == run.last


def test_supervised_resume_of_a_run_without_checkpoint_is_one_line(tmp_path, capsys):
    dead = RunDir(tmp_path / "dead")
    dead.write_json("config.json", {"mode": "sla"})
    one_line_error(capsys, ["supervised", "--resume", str(dead.path)],
                   f"--resume {dead.path}: the run never wrote a checkpoint", "start it again without --resume")
    one_line_error(capsys, ["supervised", "--resume", str(tmp_path / "nope")], "no such directory")


# --------------------------------------------------------------------------- non-finite loss
def test_check_finite_loss():
    check_finite_loss(3, {"loss": 1.5, "ce": torch.tensor(1.0), "kl": torch.tensor([0.25, 0.25])}, 0.1)
    with pytest.raises(NonFiniteLossError) as exc:
        check_finite_loss(17, {"loss": torch.tensor(float("nan")), "ce": 2.0, "kl": float("inf")}, 1e12)
    msg = str(exc.value)
    assert isinstance(exc.value, ValueError) and "\n" not in msg
    assert "step 17" in msg and "loss nan" in msg and "kl inf" in msg and "ce 2" in msg and "lr 1e+12" in msg
    assert "--lr" in msg and "--amp none" in msg
    with pytest.raises(NonFiniteLossError, match="step 2 .*joint"):
        check_finite_loss(2, {"joint": torch.tensor([1.0, float("-inf")])}, 0.05)


def test_solver_failure_becomes_the_same_one_line_error():
    from fewshot_sla.guards import solver_failure
    from fewshot_sla.heads import get_head

    head = get_head("svm", solver="qpth")
    support = torch.full((1, 5, 4), 1e30)  # features blown up by a diverging run (--lr 1e12)
    with pytest.raises(RuntimeError) as exc:  # qpth: Cannot perform LU factorization on Q
        head(torch.zeros(1, 5, 4), support, torch.arange(5).unsqueeze(0), 5)
    err = solver_failure(9, exc.value, 1e12)
    assert isinstance(err, NonFiniteLossError), exc.value
    msg = str(err)
    assert "\n" not in msg and "step 9" in msg and "lr 1e+12" in msg and "--lr" in msg and "qpth" in msg
    for feats in (support, torch.full((1, 5, 4), float("nan"))):  # the structured solver (default)
        with pytest.raises((RuntimeError, ValueError)) as exc:  # a singular block, or a non-finite kernel
            get_head("svm")(torch.zeros(1, 5, 4), feats, torch.arange(5).unsqueeze(0), 5)
        err = solver_failure(9, exc.value, 1e12)
        assert isinstance(err, NonFiniteLossError) and "step 9" in str(err), exc.value
    assert solver_failure(1, RuntimeError("CUDA out of memory"), 0.1) is None
    assert solver_failure(1, ValueError("--n-way must be at least 2"), 0.1) is None
    err = solver_failure(3, RuntimeError("\nqpth Error: Cannot perform LU factorization on Q.\nPlease make sure"), 0.5)
    assert err is not None and "qpth Error: Cannot perform LU factorization on Q." in str(err)


def test_non_finite_loss_error_is_one_line_from_the_cli(capsys, monkeypatch):
    def diverge(args):
        check_finite_loss(4, {"loss": float("nan"), "ce": 0.5}, 1e12)

    meta_train = COMMANDS["meta-train"]
    monkeypatch.setitem(COMMANDS, "meta-train", dataclasses.replace(meta_train, run=diverge))
    one_line_error(capsys, ["meta-train"], "non-finite loss at step 4", "loss nan", "lr 1e+12")


# --------------------------------------------------------------------------- NaN injection in the loops
def _meta_args(data_root, run, *extra):
    return ["meta-train", "--dataset", "folder", "--data-root", str(data_root), "--backbone", "conv4",
            "--backbone-options", "hidden=8,out_channels=8", "--n-way", "3", "--k-shot", "1", "--n-query", "2",
            "--episodes-per-epoch", "4", "--tasks-per-batch", "2", "--eval-way", "3", "--eval-shot", "1",
            "--eval-query", "2", "--val-episodes", "2", "--epochs", "3", "--device", "cpu", "--quiet",
            "--run-dir", str(run), *extra]


@pytest.mark.parametrize("head", ["protonet", "svm"])
def test_a_nan_step_stops_meta_training_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch,
                                                                           fewshot_folder, head):
    """Step 3 (the first of epoch 2) gets NaN features: with ProtoNet its loss is NaN, with the SVM
    head its solver fails or its loss is NaN; either way the run stops there with one line, and
    the checkpoint of epoch 1 (steps 1-2) is intact and loads."""
    from fewshot_sla.engine import load_model
    from fewshot_sla.meta.model import FewShotModel

    calls = {"n": 0}
    embed = FewShotModel.embed

    def poisoned(self, support, query):
        fs, fq = embed(self, support, query)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 3:
                return fs * float("nan"), fq * float("nan")
        return fs, fq

    monkeypatch.setattr(FewShotModel, "embed", poisoned)
    run = tmp_path / "run"
    line = one_line_error(capsys, _meta_args(fewshot_folder, run, "--head", head, "--svm-max-iter", "3"),
                          "step 3", "lr 0.1", "training stopped, the last checkpoint is kept")
    assert "non-finite loss" in line or "solver failed" in line
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["step"] == 2 and ckpt["epoch"] == 1
    loaded = load_model(run / "last.pt")  # refuses non-finite weights: these are finite
    assert all(torch.isfinite(v).all() for v in loaded.model.state_dict().values() if v.is_floating_point())
    assert max(r.get("step", 0) for r in RunDir(run).read_metrics()) == 2


def test_a_nan_step_stops_supervised_training(tmp_path, capsys, monkeypatch, write_cifar10_batches):
    import fewshot_sla.supervised.train as strain

    calls = {"n": 0}
    loss_fn = strain.supervised_loss

    def poisoned(*args, **kwargs):
        parts = loss_fn(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:
            parts = {k: v * float("nan") for k, v in parts.items()}
        return parts

    monkeypatch.setattr(strain, "supervised_loss", poisoned)
    root = tmp_path / "data"
    write_cifar10_batches(root)
    run = tmp_path / "run"
    one_line_error(capsys, ["supervised", "--data-root", str(root), "--backbone", "conv4", "--backbone-options",
                            "hidden=4,out_channels=4", "--batch-size", "8", "--iterations", "8", "--eval-every", "4",
                            "--val-size", "20", "--mode", "sla", "--device", "cpu", "--quiet", "--no-plot",
                            "--run-dir", str(run)],
                   "non-finite loss at step 5", "loss nan", "the last checkpoint is kept")
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_check_finite_weights_names_the_first_bad_tensor():
    from fewshot_sla.guards import check_finite_weights

    state = {"a.weight": torch.ones(3), "steps": torch.tensor(4), "b.bias": torch.tensor([0.0, float("inf")])}
    with pytest.raises(NonFiniteLossError, match=r"non-finite by step 7 \(b.bias\).*last checkpoint is kept"):
        check_finite_weights(7, state)
    check_finite_weights(7, {"a.weight": torch.ones(3), "steps": torch.tensor(4)})  # finite: nothing
