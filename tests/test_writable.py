"""Unwritable places: checked before the work (one line naming the path and the option), a write
failing late is the same kind of line, and ``eval``/``predict`` print their results before writing,
so a failed write loses nothing (the printed table is compared with a run that could write).

Running as root (modes do not stop root), read-only folders are simulated as in test_bad_inputs.
"""

from __future__ import annotations

import csv
import errno
import re

import pytest
import torch
from test_bad_inputs import _meta_train, _read_only

from fewshot_sla.cli import main
from fewshot_sla.writable import NotWritableError, check_writable_dir, check_writable_file


def _one_line(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    lines = [x for x in err.splitlines() if x.strip()]
    assert exc.value.code == 2 and len(lines) == 1 and "Traceback" not in out + err, err
    return out, lines[0]


def test_a_folder_check_leaves_no_folder_behind_when_asked(tmp_path):
    target = tmp_path / "a" / "b" / "c"
    assert check_writable_dir(target, "x", "y", keep=False) == target
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # every folder it created is gone again
    check_writable_dir(target, "x", "y")
    assert target.is_dir() and list(target.iterdir()) == []  # kept, and the probe file removed


def test_file_checks_name_the_path_and_the_fix(tmp_path, monkeypatch):
    (tmp_path / "f.txt").write_text("x")
    (tmp_path / "d").mkdir()
    with pytest.raises(NotWritableError, match=re.escape(f"cannot write the report {tmp_path / 'd'} (a folder, "
                                                         "not a file); pass --out")):
        check_writable_file(tmp_path / "d", "the report", "pass --out")
    with pytest.raises(NotWritableError, match=re.escape(f"({tmp_path / 'f.txt'} is a file, not a folder)")):
        check_writable_file(tmp_path / "f.txt" / "r.json", "the report", "pass --out")
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, [ro])
    with pytest.raises(NotWritableError, match=re.escape(f"cannot write the report {ro / 'r.json'} (Permission "
                                                         "denied); pass --out")):
        check_writable_file(ro / "r.json", "the report", "pass --out")


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, fewshot_folder):
    return _meta_train(str(fewshot_folder), tmp_path_factory.mktemp("w") / "run", "--dataset", "folder",
                       "--val-episodes", "2")


def test_eval_prints_its_table_before_a_failing_write(tmp_path, capsys, monkeypatch, folder_run):
    import fewshot_sla.meta.evaluate as ev

    args = ["eval", "--checkpoint", str(folder_run), "--episodes", "4", "--n-way", "3", "--k-shot", "1",
            "--n-query", "3", "--quiet", "--device", "cpu"]
    assert main([*args, "--output", str(tmp_path / "ok.json")]) == 0  # the reference: the same episodes
    reference = capsys.readouterr().out.splitlines()

    def read_only_disk(path, text):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(ev, "atomic_write_text", read_only_disk)
    out, line = _one_line(capsys, [*args, "--output", str(tmp_path / "lost.json")])
    assert line == (f"fewshot-sla eval: error: cannot write the evaluation JSON {tmp_path / 'lost.json'} (Read-only "
                    "file system); pass another --output FILE (the results are printed above)")
    printed = out.splitlines()
    assert printed[:-1] == reference[:-1] and len(printed) > 2  # every number printed; only the path differs
    assert printed[-1].endswith("lost.json") and not (tmp_path / "lost.json").exists()


def test_predict_prints_its_table_before_a_failing_write(tmp_path, capsys, monkeypatch, folder_run, episode):
    import fewshot_sla.predict.cli as pc

    args = ["predict", "--checkpoint", str(folder_run), "--support", str(episode / "support"), "--query",
            str(episode / "query")]
    assert main([*args, "--output", str(tmp_path / "ok.csv")]) == 0
    capsys.readouterr()
    with open(tmp_path / "ok.csv", newline="") as f:
        reference = [(r["path"], r["prediction"]) for r in csv.DictReader(f)]

    def denied(path, rows, info):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(pc, "write_rows", denied)
    out, line = _one_line(capsys, [*args, "--output", str(tmp_path / "lost.csv")])
    assert line == (f"fewshot-sla predict: error: cannot write the output file {tmp_path / 'lost.csv'} (Permission "
                    "denied); pass another --output FILE (the predictions are printed above)")
    table = out.splitlines()[1:1 + len(reference)]  # under the header: path, prediction, confidence
    assert [tuple(r.split()[:2]) for r in table] == [(p if len(p) <= 60 else "..." + p[-57:], c)
                                                      for p, c in reference]


def test_export_failing_in_torchs_serializer_is_one_line(tmp_path, capsys, monkeypatch, folder_run, episode):
    def enforce_fail(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0\nframes...")

    monkeypatch.setattr(torch.jit, "save", enforce_fail)
    out = tmp_path / "model.pt"
    _, line = _one_line(capsys, ["export", "--checkpoint", str(folder_run), "--support", str(episode / "support"),
                                 "--output", str(out)])
    assert line == (f"fewshot-sla export: error: cannot write the export file {out} (the file could not be opened "
                    "for writing); pass another --output FILE")


def test_a_run_folder_write_failing_after_the_check_is_one_line(tmp_path, capsys, monkeypatch, fewshot_folder):
    """The issue's case (config.json's temporary file refused), past the up-front check."""
    import fewshot_sla.atomic as atomic

    real = atomic.tempfile.mkstemp

    def refuse_config(*a, prefix="", **k):
        if prefix.startswith(".config.json."):
            raise PermissionError(errno.EACCES, "Permission denied", str(k.get("dir")) + "/" + prefix + "x.tmp")
        return real(*a, prefix=prefix, **k)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse_config)
    run = tmp_path / "run"
    _, line = _one_line(capsys, ["meta-train", "--dataset", "folder", "--data-root", str(fewshot_folder),
                                 "--backbone", "conv4", "--backbone-options", "hidden=4,out_channels=4",
                                 "--n-way", "3", "--k-shot", "1", "--n-query", "1", "--episodes-per-epoch", "2",
                                 "--tasks-per-batch", "2", "--epochs", "1", "--val-episodes", "0", "--test-episodes",
                                 "0", "--device", "cpu", "--quiet", "--run-dir", str(run)])
    assert line == (f"fewshot-sla meta-train: error: cannot write {run / 'config.json'} (Permission denied); make "
                    f"{run} writable or write elsewhere")
