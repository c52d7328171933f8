"""Every row of the bad-input table (docs/reference/bad-inputs.md) through the CLI in-process: exit status 2,
exactly one line on stderr, and that line equal to the table's (the table is parsed here, so the two
cannot drift). Adding a case is one table row; a new placeholder is one entry of ``PLACES``.

Placeholders in the command and the line: ``<tmp>`` a fresh folder per row holding ``file.txt`` (a
regular file: a path below it cannot be created, whoever runs the tests), ``empty/``, ``garbage.pt``,
``bad.toml`` and ``unknown.toml`` (and, when a row names it, ``evil.pt``: a pickle that would call
``os.system`` if loaded with pickle); ``<ro>`` a read-only folder; ``<folder>`` a tiny few-shot image
folder; ``<run>`` a meta-train run on it; ``<ro-run>`` a read-only copy of that run; ``<omni>`` a tiny
Omniglot (background and evaluation), ``<omni-run>`` a run trained on it with ``val_alphabets=1`` (no
test alphabets carved out); ``<maml-run>`` a ``--learner maml`` run on the folder;
``<episode>`` a support/query folder; ``<*>`` in a line matches anything.

Read-only folders: ``chmod 0o555`` stops writes for a regular user only. When the tests run as root
(which ignores the mode), ``os.open`` and ``os.mkdir`` (what ``tempfile`` and the writability probe
use) are patched to fail with ``EACCES`` below the read-only folders, so the same code paths run.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import shutil
import stat
from pathlib import Path

import pytest
import torch

from fewshot_sla.cli import main

TABLE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "bad-inputs.md"
_CELL = re.compile(r"(?<!\\)\|")


def _code(cell: str) -> str:
    """The text of a markdown code span (`` `x` `` or ``` `` x `` ```), pipes unescaped."""
    cell = cell.strip()
    if cell.startswith("``"):
        cell = cell[2:-2].strip()
    elif cell.startswith("`"):
        cell = cell[1:-1]
    return cell.replace("\\|", "|")


def table_rows(path: Path = TABLE) -> list[tuple[str, str, str, str]]:
    """``(number, case, command, line)`` of every numbered row of the table."""
    rows = []
    for text in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in _CELL.split(text.strip())[1:-1]]
        if len(cells) == 4 and cells[0].isdigit():
            rows.append((cells[0], cells[1], _code(cells[2]), _code(cells[3])))
    return rows


ROWS = table_rows()


def test_the_table_has_at_least_40_distinct_cases():
    assert len(ROWS) >= 40
    assert len({r[0] for r in ROWS}) == len(ROWS) and len({r[2] for r in ROWS}) == len(ROWS)


# --------------------------------------------------------------------------- places the rows name
def _meta_train(data: str, run: Path, *extra: str) -> Path:
    assert main(["meta-train", "--data-root", data, "--backbone", "conv4", "--backbone-options",
                 "hidden=4,out_channels=4", "--n-way", "3", "--k-shot", "1", "--n-query", "1",
                 "--episodes-per-epoch", "2", "--tasks-per-batch", "2", "--eval-way", "3", "--eval-shot", "1",
                 "--eval-query", "1", "--epochs", "1", "--device", "cpu", "--quiet", "--run-dir", str(run),
                 *extra]) == 0
    return run


@pytest.fixture(scope="module")
def shared(tmp_path_factory, fewshot_folder):
    """The module's expensive places, built once (a run is a few seconds)."""
    from predict_helpers import write_episode
    from test_data_formats import make_omniglot

    base = tmp_path_factory.mktemp("bad_inputs")
    omni = base / "omni"
    for part in ("background", "evaluation"):
        make_omniglot(omni, part, size=20)
    return {
        "<folder>": fewshot_folder,
        "<run>": _meta_train(str(fewshot_folder), base / "run", "--dataset", "folder", "--val-episodes", "2"),
        "<omni>": omni,
        "<omni-run>": _meta_train(str(omni), base / "omni-run", "--dataset", "omniglot", "--image-size", "16",
                                  "--mode", "baseline", "--transforms", "none", "--val-episodes", "0",
                                  "--dataset-options", "val_alphabets=1"),
        "<episode>": write_episode(base / "episode"),
        "<maml-run>": _meta_train(str(fewshot_folder), base / "maml-run", "--dataset", "folder", "--val-episodes",
                                  "2", "--learner", "maml"),
    }


def _read_only(monkeypatch, folders: list[Path]) -> None:
    """Make ``folders`` unwritable: their mode, and for root (whom modes do not stop) ``os.open`` /
    ``os.mkdir`` failing with EACCES for anything created below them."""
    for f in folders:
        f.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    if os.geteuid() != 0:
        return
    blocked = [str(f.resolve()) + os.sep for f in folders]
    real_open, real_mkdir = os.open, os.mkdir

    def below(path) -> bool:
        p = os.path.abspath(os.fspath(path))
        return any(p.startswith(b) for b in blocked)

    def fake_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and below(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if below(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo this ran",))


def _places(text: str, tmp: Path, shared: dict, monkeypatch) -> dict[str, str]:
    """The placeholders ``text`` names, made."""
    (tmp / "file.txt").write_text("a regular file\n")
    (tmp / "empty").mkdir()
    (tmp / "garbage.pt").write_bytes(b"this is not a checkpoint")
    (tmp / "bad.toml").write_text("epochs = [1,\n")
    (tmp / "unknown.toml").write_text("epochz = 3\n")
    if "evil.pt" in text:  # a pickle whose loading would call os.system (writing it runs nothing)
        torch.save({"model": _Evil()}, tmp / "evil.pt")
    places = {"<tmp>": str(tmp)}
    read_only = []
    if "<ro>" in text:
        (tmp / "ro").mkdir()
        places["<ro>"] = str(tmp / "ro")
        read_only.append(tmp / "ro")
    if "<ro-run>" in text:
        shutil.copytree(shared["<run>"], tmp / "ro-run")
        places["<ro-run>"] = str(tmp / "ro-run")
        read_only.append(tmp / "ro-run")
    places.update({k: str(v) for k, v in shared.items() if k in text})
    _read_only(monkeypatch, read_only)
    return places


def _fill(text: str, places: dict[str, str]) -> str:
    for k in sorted(places, key=len, reverse=True):
        text = text.replace(k, places[k])
    return text


@pytest.mark.parametrize("number, case, command, line", ROWS, ids=[f"{r[0]}-{r[1][:40]}" for r in ROWS])
def test_a_bad_input_is_the_tables_one_line(number, case, command, line, tmp_path, shared, monkeypatch, capsys):
    places = _places(command + line, tmp_path, shared, monkeypatch)
    argv = shlex.split(_fill(command, places))
    assert argv[0] == "fewshot-sla", command
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv[1:])
    out, err = capsys.readouterr()
    lines = [x for x in err.splitlines() if x.strip()]
    assert exc.value.code == 2, (exc.value.code, err)
    assert len(lines) == 1, err
    expected = _fill(line, places)
    pattern = ".*".join(re.escape(part) for part in expected.split("<*>"))
    assert re.fullmatch(pattern, lines[0]), f"\n  got:      {lines[0]}\n  expected: {expected}"
    assert "Traceback" not in out + err
