"""A checkpoint never runs code: five crafted hostile files are refused by every command that reads a
checkpoint (one line, exit 2) and by ``engine.load_model``, and the marker file their payload would
create stays absent (the same files loaded with ``weights_only=False`` do create it: the payloads are
real). Checkpoints of earlier versions (tests/data/legacy: c117c97's, and fb725f2's run directories
with NumPy random states) still load, compute the same logits and resume bit for bit; what the
current trainers write loads with a bare ``torch.load(weights_only=True)``."""

import dataclasses
import enum
import importlib.util
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch._weights_only_unpickler import get_globals_in_pkl

from fewshot_sla.cli import main
from fewshot_sla.engine import load_model
from fewshot_sla.meta.config import MetaTrainConfig
from fewshot_sla.meta.train import resume_config, train
from fewshot_sla.rundir import load_checkpoint
from fewshot_sla.safe_load import CheckpointRefusedError, pickle_globals, to_plain
from fewshot_sla.supervised import SupervisedConfig, run_training

ROOT = Path(__file__).resolve().parents[1]
LEGACY = ROOT / "tests" / "data" / "legacy"
FB725F2 = LEGACY / "fb725f2"
# the configurations and data fb725f2's run directories were written with
_spec = importlib.util.spec_from_file_location("fb725f2_make", FB725F2 / "make.py")
fb725f2 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fb725f2)


# ------------------------------------------------------------------ the hostile files
class _System:
    """Unpickles as ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Touch:
    """An arbitrary class whose unpickling creates a file (its ``__setstate__`` runs on load)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state):
        Path(state["marker"]).touch()


class _Scripted(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1


def _looks_like_a_checkpoint(payload):
    return {"format": "fewshot-sla/2", "pipeline": "meta", "config": {}, "data": {},
            "model": {"w": torch.ones(2)}, "payload": payload}


def write_hostile(kind: str, path: Path, marker: Path) -> Path:
    """One crafted checkpoint of ``kind`` at ``path``; its payload (if loaded unsafely) creates ``marker``."""
    system = _System(f"touch {marker}")
    if kind == "reduce_os_system":
        torch.save(_looks_like_a_checkpoint(system), path)
    elif kind == "arbitrary_class":
        torch.save(_looks_like_a_checkpoint(_Touch(str(marker))), path)
    elif kind == "torchscript":
        torch.jit.save(torch.jit.script(_Scripted()), str(path))
    elif kind == "zip_hostile_data_pkl":  # by hand, as torch.save lays it out, with a protocol-4 pickle
        with zipfile.ZipFile(path, "w") as z:
            # plain pickle would store a tensor through torch.storage._load_from_bytes: none here
            z.writestr("archive/data.pkl", pickle.dumps({**_looks_like_a_checkpoint(system), "model": {}}, protocol=4))
            z.writestr("archive/byteorder", "little")
            z.writestr("archive/version", "3\n")
    elif kind == "legacy_format":  # torch's pre-1.6 format: consecutive pickles, no zip
        torch.save(_looks_like_a_checkpoint(system), path, _use_new_zipfile_serialization=False)
    else:
        raise ValueError(kind)
    return path


KINDS = ["reduce_os_system", "arbitrary_class", "torchscript", "zip_hostile_data_pkl", "legacy_format"]
#: what the one line says, per kind
REASON = {
    "reduce_os_system": "refused to load: it contains 'posix.system', which a fewshot-sla checkpoint never holds",
    "arbitrary_class": f"refused to load: it contains '{_Touch.__module__}._Touch', which a fewshot-sla "
                       "checkpoint never holds",
    "torchscript": "refused to load: it is a TorchScript archive",
    "zip_hostile_data_pkl": "refused to load: it contains 'posix.system'",
    "legacy_format": "refused to load: it contains 'posix.system'",
}


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "torchscript"])
def test_the_payloads_are_real_when_loaded_unsafely(tmp_path, kind):
    """The control: the same file under ``weights_only=False`` runs its payload (creates the marker)."""
    marker = tmp_path / "ran"
    path = write_hostile(kind, tmp_path / "x.pt", marker)
    assert torch.load(path, weights_only=False)["format"] == "fewshot-sla/2"
    assert marker.exists()


def _one_line(capsys, argv):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert exc.value.code == 2 and len(lines) == 1 and "Traceback" not in out + err, err
    return lines[0]


@pytest.fixture(scope="module")
def resumable(fewshot_folder, tmp_path_factory):
    """A run directory's config.json (folder dataset) that ``meta-train --resume`` accepts."""
    cfg = MetaTrainConfig(dataset="folder", data_root=str(fewshot_folder), backbone="conv4",
                          backbone_options={"hidden": 4, "out_channels": 4}, n_way=3, k_shot=1, n_query=1,
                          episodes_per_epoch=2, tasks_per_batch=2, eval_way=3, eval_shot=1, eval_query=1,
                          val_episodes=2, epochs=1, device="cpu", quiet=True, test_episodes=0)
    return dataclasses.asdict(cfg)


COMMANDS = ["eval", "predict", "export", "meta-train --resume"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_command_refuses_a_hostile_checkpoint_in_one_line(tmp_path, capsys, episode, resumable, kind, command):
    marker = tmp_path / "ran"
    run = tmp_path / "run"
    run.mkdir()
    ckpt = write_hostile(kind, run / ("last.pt" if command == "meta-train --resume" else "best.pt"), marker)
    support = ["--support", str(episode / "support")]
    argv = {
        "eval": ["eval", "--checkpoint", str(ckpt), "--episodes", "2", "--device", "cpu", "--quiet"],
        "predict": ["predict", "--checkpoint", str(ckpt), *support, "--query", str(episode / "query"), "--quiet"],
        "export": ["export", "--checkpoint", str(ckpt), *support, "--output", str(tmp_path / "out.pt")],
        "meta-train --resume": ["meta-train", "--resume", str(run), "--quiet"],
    }[command]
    if command == "meta-train --resume":
        (run / "config.json").write_text(json.dumps({**resumable, "run_dir": str(run)}))
    line = _one_line(capsys, argv)
    assert f"{ckpt}: {REASON[kind]}" in line, line
    assert "use a best.pt or last.pt written by fewshot-sla" in line
    assert not marker.exists()
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_load_model_refuses_a_hostile_checkpoint(tmp_path, kind):
    marker = tmp_path / "ran"
    path = write_hostile(kind, tmp_path / "best.pt", marker)
    with pytest.raises(CheckpointRefusedError) as exc:
        load_model(path)
    assert f"{path}: {REASON[kind]}" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(CheckpointRefusedError):
        load_model(tmp_path)  # the run directory: its best.pt
    assert not marker.exists()


def test_the_installed_cli_refuses_in_one_line_in_a_fresh_process(tmp_path):
    marker = tmp_path / "ran"
    path = write_hostile("reduce_os_system", tmp_path / "best.pt", marker)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", "import sys; from fewshot_sla.cli import main; sys.exit(main())",
                           "eval", "--checkpoint", str(path)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"fewshot-sla eval: error: {path}: refused to load: it contains "
                                        "'posix.system', which a fewshot-sla checkpoint never holds (read with "
                                        "weights_only=True: nothing in the file ran); use a best.pt or last.pt "
                                        "written by fewshot-sla (or its run directory)"]
    assert not marker.exists()


@pytest.mark.parametrize("content, reason", [
    (b"", "(the file is empty)"),
    (b"hello, not a checkpoint\n", "(not written by torch.save: neither a zip archive nor a pickle)"),
    ("zip", "(a zip archive without the data.pkl torch.save writes)"),
])
def test_files_that_are_no_checkpoint_at_all_are_one_line(tmp_path, capsys, content, reason):
    path = tmp_path / "best.pt"
    if content == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("notes/readme.txt", "hello")
    else:
        path.write_bytes(content)
    line = _one_line(capsys, ["eval", "--checkpoint", str(path), "--device", "cpu"])
    assert line == f"fewshot-sla eval: error: {path} is not a fewshot-sla checkpoint {reason}; use a best.pt or " \
                   "last.pt written by fewshot-sla (or its run directory)"


# ------------------------------------------------------------------ the static scan and the conversion
def test_pickle_globals_reads_every_protocol_without_importing():
    payload = {"a": _System("true"), "b": [OrderedDict(x=np.float64(1.5))]}
    # the reference: torch's own scanner of GLOBAL opcodes, which reads protocol 2 only (there bytes
    # are stored through _codecs.encode; later protocols have an opcode for them)
    v2 = get_globals_in_pkl(io.BytesIO(pickle.dumps(payload, protocol=2)))
    assert {"posix.system", "collections.OrderedDict", "_codecs.encode"} <= v2
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        found = pickle_globals(pickle.dumps(payload, protocol=protocol))
        assert len(found) == len(set(found)), found
        assert set(found) == (v2 if protocol == 2 else v2 - {"_codecs.encode"}), (protocol, found)
    assert pickle_globals(b"not a pickle") == []


class _Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class _Cfg:
    path: Path
    n: np.int64


def test_to_plain_converts_numpy_paths_enums_and_dataclasses_and_keeps_state_dicts():
    sd = torch.nn.BatchNorm1d(2).state_dict()  # an OrderedDict with _metadata (BatchNorm's version)
    got = to_plain({"sd": sd, "arr": np.arange(3, dtype=np.uint32), "f": np.float64(0.25), "c": _Colour.RED,
                    "cfg": _Cfg(Path("/a/b"), np.int64(7)), "t": (np.int32(1), "x"), "s": {3, 1},
                    np.int64(5): "key"})
    assert got["sd"] is sd and got["sd"]._metadata == sd._metadata
    assert got["arr"] == [0, 1, 2] and type(got["arr"][0]) is int
    assert got["f"] == 0.25 and type(got["f"]) is float and got["c"] == "red"
    assert got["cfg"] == {"path": "/a/b", "n": 7} and type(got["cfg"]["n"]) is int
    assert got["t"] == (1, "x") and type(got["t"][0]) is int and got["s"] == [1, 3]
    assert [type(k) for k in got] == [str] * 7 + [int] and got[5] == "key"
    with_meta = OrderedDict(a=np.float32(1.0))
    with_meta._metadata = {"": {"version": 2}}
    converted = to_plain(with_meta)
    assert converted is not with_meta and converted._metadata == {"": {"version": 2}}
    assert type(converted["a"]) is float and type(with_meta["a"]) is np.float32  # the original is not changed
    with pytest.raises(TypeError, match="not a .*_Touch"):
        to_plain({"x": _Touch("m")})  # what is saved: refused
    kept = [torch.strided]
    assert to_plain(kept, strict=False) is kept  # what weights_only loading built: kept


# ------------------------------------------------------------------ earlier versions' checkpoints
PLAIN = (torch.Tensor, int, float, str, bool, type(None), list, tuple, dict)


def _only_plain(obj, where="checkpoint"):
    assert isinstance(obj, PLAIN), (where, type(obj))
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, (str, int)), (where, k)
            _only_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _only_plain(v, f"{where}[{i}]")


LEGACY_FILES = [LEGACY / "meta_v1.pt", LEGACY / "supervised_v1.pt", FB725F2 / "meta" / "last.pt",
                FB725F2 / "supervised" / "last.pt"]


@pytest.mark.parametrize("path", LEGACY_FILES, ids=lambda p: str(p.relative_to(LEGACY)))
def test_earlier_checkpoints_load_through_the_allow_list_as_plain_values(path):
    with pytest.raises(pickle.UnpicklingError, match="numpy"):
        torch.load(path, weights_only=True)  # they hold NumPy objects: the allow-list is needed
    ckpt = load_checkpoint(path)
    _only_plain(ckpt)
    # the reference: the same (trusted, in-repo) file read by plain pickle
    trusted = torch.load(path, weights_only=False)
    name, keys, pos, has_gauss, gauss = trusted["rng"]["numpy"]
    assert isinstance(keys, np.ndarray) and list(ckpt["rng"]["numpy"]) == [name, keys.tolist(), pos, has_gauss, gauss]
    assert ckpt["model"].keys() == trusted["model"].keys()
    assert all(torch.equal(ckpt["model"][k], trusted["model"][k]) for k in ckpt["model"])


def test_earlier_checkpoints_give_the_same_logits():
    exp = torch.load(LEGACY / "expected.pt", weights_only=True)
    meta = load_model(LEGACY / "meta_v1.pt")
    with torch.no_grad():
        assert torch.equal(meta.model(exp["support"], exp["labels"], exp["query"], 3), exp["meta_logits"])
        out = load_model(LEGACY / "supervised_v1.pt").model(exp["x"])
    assert out.keys() == exp["supervised"].keys() and all(torch.equal(out[k], exp["supervised"][k]) for k in out)


# ------------------------------------------------------------------ what the trainers write now, and resume
def _no_time(path):
    return [{k: v for k, v in json.loads(line).items() if k != "time"}
            for line in (path / "metrics.jsonl").read_text().splitlines()]


def _same_run(a: Path, b: Path):
    wa, wb = torch.load(a / "last.pt", weights_only=True), torch.load(b / "last.pt", weights_only=True)
    assert wa["model"].keys() == wb["model"].keys()
    assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"])
    for sa, sb in zip(wa["optimizer"]["state"].values(), wb["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert _no_time(a) == _no_time(b)


def test_meta_checkpoints_are_plain_and_resume_exactly_also_from_fb725f2(tmp_path):
    straight = MetaTrainConfig(**fb725f2.META, epochs=2, run_dir=str(tmp_path / "straight"), test_episodes=0)
    train(straight, datasets=fb725f2.meta_data())
    for name in ("last.pt", "best.pt"):
        # a bare weights_only load (no allow-list) reads it, and it holds only plain values
        _only_plain(torch.load(tmp_path / "straight" / name, weights_only=True))
    train(dataclasses.replace(straight, epochs=1, run_dir=str(tmp_path / "now")), datasets=fb725f2.meta_data())
    old = tmp_path / "old"
    shutil.copytree(FB725F2 / "meta", old)  # epoch 1 of 2, written by fb725f2 (NumPy RNG state as ndarray)
    for run in (tmp_path / "now", old):
        train(resume_config(run, {"epochs": 2, "quiet": True}), datasets=fb725f2.meta_data(), resume=True)
        _same_run(tmp_path / "straight", run)
        _only_plain(torch.load(run / "last.pt", weights_only=True))


def test_supervised_checkpoints_are_plain_and_resume_exactly_also_from_fb725f2(tmp_path):
    cfg = SupervisedConfig(**fb725f2.SUPERVISED, run_dir=str(tmp_path / "straight"))
    data = fb725f2.supervised_data(cfg)
    run_training(cfg, data=data)
    _only_plain(torch.load(tmp_path / "straight" / "last.pt", weights_only=True))
    run_training(dataclasses.replace(cfg, stop_after=5, run_dir=str(tmp_path / "now")), data=data)
    old = tmp_path / "old"
    shutil.copytree(FB725F2 / "supervised", old)  # iteration 5 of 8, written by fb725f2
    for run in (tmp_path / "now", old):
        run_training(dataclasses.replace(cfg, run_dir=str(run)), data=data, resume=True)
        _same_run(tmp_path / "straight", run)
        _only_plain(torch.load(run / "last.pt", weights_only=True))
