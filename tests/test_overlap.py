"""Train/test overlap: checkpoints record their training classes, and ``eval`` refuses a split that
shares classes with them unless ``--allow-overlap``. References: the classes counted by hand from
the Omniglot fixture's folders and the splits loaded independently with ``get_dataset``."""

from __future__ import annotations

import pytest
import torch
from test_bad_inputs import _meta_train
from test_data_formats import ALPHABETS, make_omniglot

from fewshot_sla.cli import main
from fewshot_sla.config import ConfigError
from fewshot_sla.data import get_dataset
from fewshot_sla.hints import only_options
from fewshot_sla.overlap import check_overlap, class_key, training_classes


@pytest.fixture(scope="module")
def omni(tmp_path_factory):
    root = tmp_path_factory.mktemp("omni")
    for part in ("background", "evaluation"):
        make_omniglot(root, part, size=20)
    run = _meta_train(str(root), root.parent / "omni-run", "--dataset", "omniglot", "--image-size", "16", "--mode",
                      "baseline", "--transforms", "none", "--val-episodes", "0", "--dataset-options",
                      "val_alphabets=1")
    return root, run


def _eval(run, *extra):
    return ["eval", "--checkpoint", str(run), "--episodes", "2", "--n-way", "2", "--k-shot", "1", "--n-query", "1",
            "--quiet", "--device", "cpu", *extra]


def test_the_checkpoint_records_its_training_classes(omni):
    root, run = omni
    record = torch.load(run / "last.pt", weights_only=False)["data"]["train_classes"]
    val = get_dataset("omniglot", root, "val", val_alphabets=1)
    every = {f"{a}/character{c:02d}" for a, n in ALPHABETS.items() for c in range(1, n + 1)}  # on disk
    assert record["dataset"] == "omniglot" and record["split"] == "train" and record["part"] == "background"
    assert record["options"] == {"val_alphabets": 1}
    assert set(record["names"]) == every - set(val.class_names) and len(val.class_names) > 0


def test_eval_refuses_test_alphabets_it_trained_on_and_counts_them(omni, tmp_path, capsys):
    root, run = omni
    test = get_dataset("omniglot", root, "test", val_alphabets=1, test_alphabets=1)
    trained = set(torch.load(run / "last.pt", weights_only=False)["data"]["train_classes"]["names"])
    shared = sorted(set(test.class_names) & trained)  # by hand: every test character was trained on
    alphabets = sorted({n.split("/")[0] for n in shared})
    assert len(shared) == len(test.class_names) == ALPHABETS[alphabets[0]] and len(alphabets) == 1
    with pytest.raises(SystemExit) as exc:
        main(_eval(run, "--dataset-options", "test_alphabets=1", "--output", str(tmp_path / "e.json")))
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "\n" not in err
    assert (f"--dataset-options test_alphabets=1: the test split of omniglot shares 1 alphabet ({len(shared)} of its "
            f"{len(shared)} characters: {alphabets[0]}) with the classes {run} trained on") in err
    assert not (tmp_path / "e.json").exists()
    # --allow-overlap evaluates anyway, with a one-line note
    assert main(_eval(run, "--dataset-options", "test_alphabets=1", "--allow-overlap", "--output",
                      str(tmp_path / "e.json"))) == 0
    err = capsys.readouterr().err.strip()
    assert err == f"note: the test split shares {len(shared)} of its {len(shared)} classes with {run}'s training " \
                  "classes (--allow-overlap)"
    assert (tmp_path / "e.json").is_file()


def test_the_official_test_split_is_not_an_overlap_though_names_repeat(omni, tmp_path, capsys):
    """The fixture's evaluation part reuses the background's alphabet names: other characters all the same."""
    root, run = omni
    assert main(_eval(run, "--output", str(tmp_path / "e.json"))) == 0
    assert capsys.readouterr().err == ""


def test_an_old_checkpoint_gets_a_note_that_nothing_was_checked(omni, tmp_path, capsys):
    root, run = omni
    ckpt = torch.load(run / "last.pt", weights_only=False)
    del ckpt["data"]["train_classes"]  # as written before the record existed
    old = tmp_path / "old.pt"
    torch.save(ckpt, old)
    assert main(_eval(old, "--dataset-options", "test_alphabets=1", "--output", str(tmp_path / "e.json"))) == 0
    assert capsys.readouterr().err.strip() == (f"note: {old} does not record its training classes (written by an "
                                               "earlier version); whether the test split shares classes with them "
                                               "was not checked")


class _Split:
    def __init__(self, names, part="background"):
        self.class_names, self.meta = names, {"part": part}


def test_rotated_classes_count_as_their_characters():
    names = ["A/c1", "A/c2", "B/c1"]
    rotated = [f"{n}/rot{k}" for n in names for k in (0, 90, 180, 270)]
    record = training_classes("omniglot", "train", {"rotate_classes": True}, rotated, {"part": "background"})
    assert {class_key("omniglot", n) for n in record["names"]} == set(names)
    with pytest.raises(ConfigError, match=r"rotate_classes=false,test_alphabets=2: the test split of omniglot "
                                          r"shares 1 alphabet \(2 of its 3 characters: A\)"):
        check_overlap({"train_classes": record}, _Split(["A/c1", "A/c2", "C/c9"]), "omniglot", "test",
                      {"rotate_classes": False, "test_alphabets": 2}, "x.pt")
    # the same names in the evaluation part are other characters
    check_overlap({"train_classes": record}, _Split(["A/c1"], "evaluation"), "omniglot", "test", {}, "x.pt")
    # another dataset's classes are never the same classes
    check_overlap({"train_classes": record}, _Split(["A/c1"], ""), "folder", "test", {}, "x.pt")


def test_a_supervised_checkpoint_records_its_classes_and_eval_refuses_them(tmp_path):
    from predict_helpers import supervised_run
    from synthetic import synthetic_dataset

    run = supervised_run(tmp_path / "sup")
    data = torch.load(run / "last.pt", weights_only=False)["data"]
    ds = synthetic_dataset(4, 12, 16, 3, seed=3)  # what supervised_run trains on
    assert data["train_classes"]["names"] == list(ds.class_names) and data["train_classes"]["split"] == "train"
    name = data["train_classes"]["dataset"]  # the config's dataset (the data came in memory)
    with pytest.raises(ConfigError, match=rf"the test split of {name} shares 2 of its 3 classes \(class000, "
                                          r"class003\) with the classes"):
        check_overlap(data, _Split(["class000", "class003", "other"], ""), name, "test", {}, run)


def test_hints_keep_only_the_commands_options(tmp_path):
    from fewshot_sla.data.base import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError) as exc:
        get_dataset("omniglot", tmp_path, "test")
    msg = str(exc.value)
    assert "download=True (--download)" in msg
    assert only_options(msg, {"--data-root", "--download"}) == msg  # meta-train, supervised: unchanged
    assert only_options(msg, {"--data-root"}) == msg.replace(
        ", or pass download=True (--download) to fetch the official images_evaluation.zip", "")
    assert only_options("x not found; pass download=True (--download) to fetch it from U, or set the root", set()) \
        == "x not found; set the root"
