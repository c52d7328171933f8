"""The reproducibility record (fewshot_sla/record.py): the split fingerprint against hashlib by hand
and under reordering/editing of the files on disk, the record in every eval JSON, and the one-line
refusal of the results tables to pair results whose records differ."""

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from predict_helpers import meta_run
from synthetic import synthetic_dataset

import fewshot_sla
from fewshot_sla.data import get_dataset
from fewshot_sla.data.base import ImageDataset
from fewshot_sla.meta.config import EvalConfig
from fewshot_sla.meta.evaluate import evaluate
from fewshot_sla.record import RecordMismatch, check_pairable, record_difference, split_fingerprint

ROOT = Path(__file__).resolve().parents[1]


def _write(root, ds, order):
    """``ds`` as PNGs ``root/test/<class>/<i>.png``, the files created in the order ``order``."""
    for i in order:
        d = root / "test" / ds.class_names[int(ds.labels[i])]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ds.images[i, 0].numpy(), mode="L").save(d / f"{i:04d}.png")
    return root


def _hand_fingerprint(ds):
    """sha256 of the sorted blake2b hashes of (class name, shape, pixels), by hand."""
    digests = []
    for img, y in zip(ds.images, ds.labels):
        arr = img.numpy()
        h = hashlib.blake2b(digest_size=16)
        h.update(ds.class_names[int(y)].encode() + b"\0" + ",".join(map(str, arr.shape)).encode() + b"\0")
        h.update(np.ascontiguousarray(arr).tobytes())
        digests.append(h.hexdigest())
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()


def test_fingerprint_ignores_file_order_and_sees_one_changed_image(tmp_path):
    ds = synthetic_dataset(3, 4, 8, 1, seed=1, prefix="c")
    n = len(ds.labels)
    a = get_dataset("folder", _write(tmp_path / "a", ds, range(n)), "test")
    b = get_dataset("folder", _write(tmp_path / "b", ds, reversed(range(n))), "test")
    fa, fb = split_fingerprint(a), split_fingerprint(b)
    assert fa == fb and fa["sha256"] == _hand_fingerprint(a)
    assert fa["classes"] == ["c000", "c001", "c002"] and fa["images"] == 12
    # the same images in another order in memory: the same fingerprint
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    shuffled = ImageDataset(a.images[perm], a.labels[perm], a.class_names, name="folder", split="test")
    assert split_fingerprint(shuffled)["sha256"] == fa["sha256"]
    # one pixel of one image changed on disk: another fingerprint
    f = tmp_path / "b" / "test" / "c001" / "0005.png"
    img = np.asarray(Image.open(f)).copy()
    img[0, 0] = 255 - img[0, 0]
    Image.fromarray(img, mode="L").save(f)
    fc = split_fingerprint(get_dataset("folder", tmp_path / "b", "test"))
    assert fc["sha256"] != fa["sha256"] and fc["classes"] == fa["classes"]
    # an image moved to another class: another fingerprint
    moved = ImageDataset(a.images, torch.where(torch.arange(n) == 0, 1, a.labels), a.class_names, name="x",
                         split="test")
    assert split_fingerprint(moved)["sha256"] != fa["sha256"]


def test_every_eval_json_holds_the_record(tmp_path):
    run = meta_run(tmp_path / "run", mode="baseline")
    ds = synthetic_dataset(5, 6, 16, 1, seed=2, prefix="te")
    cfg = EvalConfig(checkpoint=str(run), episodes=4, n_way=3, k_shot=1, n_query=2, seed=7, device="cpu", quiet=True,
                     output=str(tmp_path / "e.json"))
    evaluate(cfg, datasets={("synthetic", "data", "test", None, "{}"): ds})
    rec = json.loads((tmp_path / "e.json").read_text())["record"]
    assert rec["checkpoints"][0]["sha256"] == hashlib.sha256((run / "best.pt").read_bytes()).hexdigest()
    assert rec["checkpoints"][0]["image_spec"]["channels"] == 1
    assert rec["dataset"] == "synthetic" and rec["split"] == "test" and rec["dataset_options"] == {}
    assert rec["fingerprint"]["sha256"] == _hand_fingerprint(ds) and rec["fingerprint"]["images"] == 30
    assert rec["protocol"] == {"n_way": 3, "k_shot": 1, "n_query": 2, "episodes": 4, "seed": 7, "support_augment": 0,
                               "support_recipe": None, "head": None, "inferences": {str(run): ["plain"]}}
    assert rec["package"]["version"] == fewshot_sla.__version__
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(fewshot_sla.__file__).parent, capture_output=True,
                         text=True)
    assert rec["package"]["commit"] == (git.stdout.strip() if git.returncode == 0 else None)


def _record(**changes):
    rec = {"dataset": "omniglot", "dataset_options": {"test_alphabets": 5}, "split": "test",
           "fingerprint": {"classes": ["a", "b"], "images": 40, "sha256": "f" * 64},
           "protocol": {"n_way": 5, "k_shot": 1, "n_query": 15, "episodes": 1000, "seed": 0, "support_augment": 0,
                        "head": None},
           "checkpoints": [{"path": "x", "sha256": "0" * 64}], "package": {"version": "0.1.0", "commit": None}}
    for path, value in changes.items():
        *parents, last = path.split("__")
        d = rec
        for p in parents:
            d = d[p]
        d[last] = value
    return rec


def test_record_difference_names_the_field_that_matters():
    base = _record()
    assert record_difference(base, _record(checkpoints=[{"path": "y", "sha256": "1" * 64}])) is None  # other model
    assert record_difference(base, _record(package={"version": "0.2.0", "commit": "abc"})) is None
    assert record_difference(base, _record(fingerprint__sha256="e" * 64))[0] == "fingerprint.sha256"
    assert record_difference(base, _record(protocol__support_augment=5)) == ("protocol.support_augment", 0, 5)
    assert record_difference(base, _record(protocol__seed=1))[0] == "protocol.seed"
    assert record_difference(base, _record(dataset_options={"test_alphabets": 6}))[0] == "dataset_options"
    check_pairable([("a.json", base), ("old.json", None), ("b.json", _record())])
    with pytest.raises(RecordMismatch) as e:
        check_pairable([("a.json", base), ("b.json", _record(protocol__support_augment=5))])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("b.json and a.json differ in protocol.support_augment (5 vs 0)")


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _eval_file(path, run, record, way=5):
    ev = {"split": "test", "episodes": 2, "n_query": 15, "seed": 0, "dataset": "omniglot", "n_way": way, "k_shot": 1,
          "models": [{"checkpoint": f"/runs/{run}", "mode": "baseline", "reported": "plain",
                      "results": {"plain": {"mean": 0.5, "ci95": 0.0, "std": 0.5, "n": 2, "accuracies": [1.0, 0.0]}}}],
          "comparisons": [], "record": record}
    path.write_text(json.dumps(ev))
    return path


def test_tables_refuse_to_pair_results_whose_records_differ(tmp_path):
    runs_table = _load("omniglot_runs_table")
    a = _eval_file(tmp_path / "a.json", "base_s0", _record())
    b = _eval_file(tmp_path / "b.json", "sla_s0", _record(protocol__support_augment=5))
    c = _eval_file(tmp_path / "c.json", "sla_s0", _record())
    runs_table.collect_tests([a, c])  # the same record: paired
    with pytest.raises(SystemExit, match=r"^omniglot_runs_table.py: error: .*b\.json and .*a\.json differ in "
                                         r"protocol\.support_augment \(5 vs 0\)"):
        runs_table.collect_tests([a, b])
    # omniglot_table: the same setting in two folders (seeds) with other split fingerprints
    table = _load("omniglot_table")
    for seed, fp in ((0, "f" * 64), (1, "e" * 64)):
        d = tmp_path / f"s{seed}"
        d.mkdir()
        _eval_file(d / "eval_test_5way1shot.json", f"base_s{seed}", _record(fingerprint__sha256=fp))
        (d / f"base_s{seed}").mkdir()
        (d / f"base_s{seed}" / "summary.json").write_text(json.dumps({"steps": 1, "train_time_s": 60, "best": {}}))
    results = [table.collect(tmp_path / "s0"), table.collect(tmp_path / "s1")]
    with pytest.raises(SystemExit, match="differ in fingerprint.sha256"):
        table.check_records(results)
    table.check_records(results[:1])
    # omniglot_pretrain_table: two runs of one way with other protocols, through its command line
    d = tmp_path / "pre"
    d.mkdir()
    _eval_file(d / "eval_pre_sla_5way_protonet.json", "pre_sla", _record())
    _eval_file(d / "eval_pre_base_5way_protonet.json", "pre_base", _record(protocol__episodes=600))
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "omniglot_pretrain_table.py"), str(d)],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "protocol.episodes" in r.stderr
