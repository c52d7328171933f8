"""The one command-line grammar (fewshot_sla.cli_options): every subcommand is generated from
dataclasses, refuses abbreviated or misspelt options with the nearest real one, checks --device
before any work, and ``list`` describes each named config as its TOML file does."""

import json
import re
import sys

import pytest
import torch

from fewshot_sla.cli import build_parser, main
from fewshot_sla.cli_options import COMMANDS
from fewshot_sla.config import CONFIG_DIR

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEVICE_COMMANDS = {  # argv of each subcommand that takes --device, with paths that do not exist
    "meta-train": ["meta-train", "--data-root", "/nonexistent"],
    "supervised": ["supervised", "--data-root", "/nonexistent"],
    "eval": ["eval", "--checkpoint", "/nonexistent"],
    "predict": ["predict", "--checkpoint", "/nonexistent", "--support", "/nonexistent", "--query", "/nonexistent"],
    "export": ["export", "--checkpoint", "/nonexistent", "--support", "/nonexistent", "--output", "x.pt"],
}


def refusal(capsys, argv):
    """Exit status and stderr lines of a refused command line."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return exc.value.code, [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("argv, given, meant", [
    (["meta-train", "--epoch", "1"], "--epoch", "--epochs"),
    (["meta-train", "--num-thread", "1"], "--num-thread", "--num-threads"),
    (["supervised", "--iteration=5"], "--iteration", "--iterations"),
    (["supervised", "--evaluat", "RUN"], "--evaluat", "--evaluate"),
    (["predict", "--checkpoint", "c", "--support", "s", "--query", "q", "--num-thread", "1"], "--num-thread",
     "--num-threads"),
])
def test_an_abbreviated_or_misspelt_option_is_refused_with_the_nearest_one(capsys, argv, given, meant):
    code, lines = refusal(capsys, argv)
    assert code == 2 and len(lines) == 1, lines  # one line (no usage block), named by the subcommand
    assert lines[0] == f"fewshot-sla {argv[0]}: error: unknown option {given}; did you mean {meant}?"


def test_no_parser_takes_a_prefix_for_an_option():
    parser = build_parser()
    subparsers = parser._subparsers._group_actions[0].choices
    assert set(subparsers) == set(COMMANDS) >= {"meta-train", "supervised", "eval", "predict", "export", "list",
                                                 "plot"}
    assert not parser.allow_abbrev and not any(p.allow_abbrev for p in subparsers.values())


def test_every_subcommand_that_takes_a_device_is_listed_here():
    build_parser()
    takes = {name for name, cmd in COMMANDS.items()
             if any("device" in getattr(cls, "__dataclass_fields__", {}) for cls in cmd.options)}
    assert takes == set(DEVICE_COMMANDS)


@pytest.mark.parametrize("name", sorted(DEVICE_COMMANDS))
@pytest.mark.parametrize("device, fix", [("gpu", "use auto, cpu, cuda or cuda:N"),
                                         ("cuda", "CUDA is not available; use --device cpu"),
                                         ("cuda:1", "CUDA is not available; use --device cpu")])
def test_device_is_checked_before_any_work_in_one_line(capsys, monkeypatch, name, device, fix):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU build, also on a GPU machine
    code, lines = refusal(capsys, [*DEVICE_COMMANDS[name], "--device", device])
    # one line naming the option and the fix, before the missing paths are looked at
    assert code == 2 and lines == [f"fewshot-sla {name}: error: --device {device} " + (
        f"is not a device; {fix}" if device == "gpu" else f"was requested but {fix}")]


def test_list_describes_each_named_config_as_its_toml_file(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    listed = out[out.index("named configs (--config NAME):") + 1:]
    files = sorted(CONFIG_DIR.glob("*.toml"))
    assert len(listed) == len(files) > 30
    for line, f in zip(listed, files):
        description = " ".join(tomllib.loads(f.read_text())["description"].split())
        name, _, text = line.strip().partition(" ")
        assert name == f.stem and text.strip() == description and description


def _layout_files(layout):
    """The file and folder names a layout line names (``{a,b}`` expanded), not the patterns (``<class>/*``)."""
    out = []
    for word in layout.split():
        word = word.strip("(),;:")
        if "<" in word or "*" in word or not re.search(r"(/|\.(zip|pickle|pkl|npz|tgz|gz|txt)|ubyte\[\.gz\])$", word):
            continue
        m = re.search(r"\{([^}]*)\}", word)
        out += [word[:m.start()] + alt + word[m.end():] for alt in m.group(1).split(",")] if m else [word]
    return out


def test_list_gives_each_datasets_files_as_its_loader_looks_for_them(capsys, tmp_path, monkeypatch):
    """Every file a dataset's layout line names is one its loader asks for when the data root is empty."""
    import fewshot_sla.data.fashion_mnist as fm
    from fewshot_sla.data import dataset_info, get_dataset, list_datasets, registry

    # a Fashion-MNIST installed where Debian's package puts it would be found instead of refused
    monkeypatch.setattr(fm, "DEFAULT_ROOT", tmp_path / "nothing")
    monkeypatch.setitem(registry.DEFAULT_ROOTS, "fashion-mnist", tmp_path / "nothing")

    assert main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    start = out.index("datasets (the files each expects under --data-root DIR):") + 1
    listed = [line.split(None, 1) for line in out[start:start + len(list_datasets())]]
    assert [name for name, _ in listed] == list_datasets()
    for name, layout in listed:
        assert layout == dataset_info(name).layout and layout
        asked = ""
        for split in dataset_info(name).splits:
            try:
                get_dataset(name, tmp_path, split)
            except (FileNotFoundError, ValueError) as e:
                asked += f" {e}"
        files = [f.rstrip("/") for f in _layout_files(layout)]  # a folder's name
        assert len(files) >= 2 and all(f in asked for f in files), (name, [f for f in files if f not in asked])


def test_predict_and_export_take_num_threads_and_give_the_same_result(run, episode, tmp_path, monkeypatch):
    common = ["--checkpoint", str(run), "--support", str(episode / "support"), "--quiet"]
    set_to = []
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    assert main(["predict", *common, "--query", str(episode / "query"), "--output", str(tmp_path / "a.json")]) == 0
    assert main(["predict", *common, "--query", str(episode / "query"), "--output", str(tmp_path / "b.json"),
                 "--num-threads", "1"]) == 0
    assert set_to == [1]
    a, b = (json.loads((tmp_path / f"{x}.json").read_text()) for x in "ab")
    assert a == b and len(a["predictions"]) > 0
    assert main(["export", *common, "--output", str(tmp_path / "m.pt"), "--num-threads", "1"]) == 0
    assert set_to == [1, 1] and (tmp_path / "m.pt").stat().st_size > 0


def test_supervised_actions_keep_their_spelling():
    parser = build_parser()
    ns = parser.parse_args(["supervised", "--ensemble", "a", "b", "--split", "val", "--output", "r.json"])
    assert (ns.ensemble, ns.split, ns.output) == (["a", "b"], "val", "r.json")
    ns = parser.parse_args(["supervised", "--evaluate", "a", "--device", "cpu"])
    assert (ns.evaluate, ns.device) == ("a", "cpu")
    assert parser.parse_args(["supervised", "--resume", "RUN", "--stop-after", "3"]).resume == "RUN"


def test_quiet_meta_train_prints_the_last_lines_of_a_verbose_run(fewshot_folder, tmp_path, capsys):
    def train(run, *quiet):
        assert main(["meta-train", "--dataset", "folder", "--data-root", str(fewshot_folder), "--backbone", "conv4",
                     "--backbone-options", "hidden=8,out_channels=8", "--n-way", "3", "--k-shot", "1", "--n-query",
                     "2", "--episodes-per-epoch", "2", "--tasks-per-batch", "2", "--eval-way", "3", "--eval-shot", "1",
                     "--eval-query", "2", "--val-episodes", "2", "--epochs", "2", "--device", "cpu", "--run-dir",
                     str(tmp_path / run), *quiet]) == 0
        return capsys.readouterr().out.splitlines()

    verbose, quiet = train("a"), train("b", "--quiet")
    # the selection, then the final test of best.pt (RUN/test.json)
    assert len(verbose) > 3 and verbose[-2].startswith("best val aggregated ")
    assert verbose[-1].startswith("test aggregated ") and verbose[-1].endswith(f"{tmp_path / 'a' / 'test.json'}")
    assert quiet == [line.replace(str(tmp_path / "a"), str(tmp_path / "b")) for line in verbose[-2:]]
