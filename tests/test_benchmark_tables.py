"""The result tables of benchmarks/: seeds combined and runs paired against hand-computed
numbers on made-up evaluation files."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(run, inference, mean, ci):
    return {"run": run, "inference": inference, "test_20way": {"mean": mean, "ci95": ci, "std": 0.1, "n": 1000}}


def test_omniglot_table_combines_seeds_by_run_name():
    table = _load("omniglot_table")
    seeds = [
        {"rows": [_row("baseline_s0", "plain", 0.94, 0.002), _row("sla_s0", "aggregated", 0.955, 0.002)],
         "comparisons": {"20way": [{"a": "/x/s0/sla_s0", "b": "/x/s0/baseline_s0", "inference_a": "aggregated",
                                    "inference_b": "plain", "mean": 0.015, "ci95": 0.001, "n": 1000}]}},
        {"rows": [_row("baseline_s1", "plain", 0.95, 0.003), _row("sla_s1", "aggregated", 0.951, 0.001)],
         "comparisons": {"20way": [{"a": "/x/s1/sla_s1/best.pt", "b": "/x/s1/baseline_s1", "inference_a": "aggregated",
                                    "inference_b": "plain", "mean": 0.001, "ci95": 0.002, "n": 1000}]}},
    ]
    out = table.across_seeds(seeds)
    acc = {(r["run"], r["inference"], r["setting"]): r for r in out["accuracy"]}
    base = acc[("baseline", "plain", "20way")]
    assert base["values"] == [0.94, 0.95] and base["mean"] == pytest.approx(0.945)
    assert base["spread"] == pytest.approx(0.01) and base["max_ci95"] == 0.003
    assert acc[("sla", "aggregated", "20way")]["spread"] == pytest.approx(0.004)
    one = table._spread([0.9], [0.01])
    assert one["spread"] is None and one["mean"] == 0.9
    (diff,) = out["paired"]
    assert diff["difference"] == "sla:aggregated - baseline:plain" and diff["setting"] == "20way"
    assert diff["values"] == [0.015, 0.001] and diff["mean"] == pytest.approx(0.008)
    assert diff["spread"] == pytest.approx(0.014) and diff["max_ci95"] == 0.002


def _run(tmp_path, name, mode, n_way=20, sd_start=0.0, vals=(), seed=0, head="protonet"):
    d = tmp_path / name
    d.mkdir()
    cfg = {"mode": mode, "head": head, "transforms": "rotation", "n_way": n_way, "k_shot": 1, "n_query": 5,
           "tasks_per_batch": 1, "seed": seed, "epochs": 3, "episodes_per_epoch": 1000, "sd_start": sd_start,
           "dataset_options": {"rotate_classes": mode == "baseline"}}
    (d / "config.json").write_text(json.dumps(cfg))
    rows = [{"kind": "val", "step": step, **{f"acc_{k}": v for k, v in acc.items()}} for step, acc in vals]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def _eval(path, models, seed=0, split=None):
    ev = {"split": "test", "episodes": 4, "n_query": 15, "seed": seed, "dataset": "omniglot", "n_way": 20,
          "k_shot": 1, "models": [{"checkpoint": f"/runs/{name}", "mode": mode,
                                   "results": {inf: {"mean": float(np.mean(a)), "ci95": 0.0, "accuracies": a}
                                               for inf, a in res.items()}}
                                  for name, mode, res in models]}
    ev.update(split or {})  # what `fewshot-sla eval` records of the split (absent in older files)
    path.write_text(json.dumps(ev))
    return path


def test_omniglot_runs_table_curves_and_paired_differences(tmp_path):
    table = _load("omniglot_runs_table")
    base = _run(tmp_path, "baseline_s0", "baseline", n_way=60, vals=[(1000, {"plain": 0.9})])
    sla = _run(tmp_path, "sla_s0", "sla", vals=[(1000, {"single": 0.91, "aggregated": 0.93})])
    sd = _run(tmp_path, "slasd_s0", "sla+sd", sd_start=0.5,
              vals=[(1000, {"single": 0.8, "aggregated": 0.85, "distilled": 0.8})])
    runs = [table.collect_run(r) for r in (base, sla, sd)]
    assert [r["images_per_step"] for r in runs] == [60 * 6, 20 * 6 * 4, 20 * 6 * 4]
    assert runs[2]["curve"] == [{"step": 1000, "images": 1000 * 480,
                                 "val": {"single": 0.8, "aggregated": 0.85, "distilled": 0.8}}]
    assert runs[2]["sd_start"] == 0.5 and runs[0]["steps"] == 3000
    assert [r["val_rotated_classes"] for r in runs] == [True, False, False]
    b = [0.9, 0.8, 1.0, 0.7]
    f1 = _eval(tmp_path / "a.json", [("baseline_s0", "baseline", {"plain": b}),
                                     ("sla_s0", "sla", {"single": [0.9, 0.9, 0.9, 0.9], "aggregated": [1, 1, 1, 0.8]})])
    f2 = _eval(tmp_path / "b.json", [("baseline_s0", "baseline", {"plain": b}),
                                     ("slasd_s0", "sla+sd", {"distilled": [0.95, 0.85, 0.9, 0.9]})])
    tests, per_episode = table.collect_tests([f1, f2])
    assert tests["20way1shot"]["slasd_s0"]["distilled"]["mean"] == pytest.approx(0.9)
    diffs = {(d["b"], d["inference_b"]): d for d in table.paired(runs, per_episode)}
    assert set(diffs) == {("baseline_s0", "plain"), ("sla_s0", "single"), ("sla_s0", "aggregated")}
    x = np.array([0.95, 0.85, 0.9, 0.9]) - np.array(b)  # by hand: mean, 1.96 * population std / sqrt(n)
    assert diffs[("baseline_s0", "plain")]["mean"] == pytest.approx(x.mean())
    assert diffs[("baseline_s0", "plain")]["ci95"] == pytest.approx(1.96 * x.std() / 2)
    assert diffs[("sla_s0", "aggregated")]["mean"] == pytest.approx(0.9 - 0.95)


def test_omniglot_runs_table_pairs_within_a_seed_and_against_named_references(tmp_path):
    table = _load("omniglot_runs_table")
    names = [("baseline_s0", "baseline", 0, 60), ("sla_s0", "sla", 0, 20), ("sla_s1", "sla", 1, 20),
             ("slasd_s1", "sla+sd", 1, 20), ("sla30way_s0", "sla", 0, 30)]
    runs = [table.collect_run(_run(tmp_path, n, m, n_way=w, seed=s)) for n, m, s, w in names]
    assert runs[4]["images_per_step"] == 30 * 6 * 4
    ridge = table.collect_run(_run(tmp_path, "slaridge_s0", "sla", head="ridge"))
    assert (ridge["head"], ridge["images_per_step"], runs[4]["head"]) == ("ridge", 20 * 6 * 4, "protonet")
    f = _eval(tmp_path / "a.json", [
        ("baseline_s0", "baseline", {"plain": [0.9, 0.8, 1.0, 0.7]}),
        ("sla_s0", "sla", {"single": [0.9, 0.9, 0.9, 0.9], "aggregated": [1.0, 1.0, 1.0, 0.8]}),
        ("sla_s1", "sla", {"aggregated": [0.8, 0.8, 0.8, 0.8]}),
        ("slasd_s1", "sla+sd", {"distilled": [0.7, 0.9, 0.9, 0.9]}),
        ("sla30way_s0", "sla", {"aggregated": [1.0, 0.9, 1.0, 1.0]})])
    _, per_episode = table.collect_tests([f])
    # default references (baseline and SLA runs): the seed-1 SLA+SD run against seed 1's SLA run only
    default = [(d["a"], d["b"], d["inference_b"]) for d in table.paired(runs, per_episode)]
    assert default == [("slasd_s1", "sla_s1", "aggregated")]
    assert table.paired(runs, per_episode)[0]["mean"] == pytest.approx(0.85 - 0.8)
    named = {(d["a"], d["b"], d["inference_b"]): d["mean"]
             for d in table.paired(runs, per_episode, ["baseline_s0", "sla_s0"])}
    # named references: only the seed-0 run that is not one of them is paired (seed-1 runs have no reference)
    assert set(named) == {("sla30way_s0", "baseline_s0", "plain"), ("sla30way_s0", "sla_s0", "single"),
                          ("sla30way_s0", "sla_s0", "aggregated")}
    assert named[("sla30way_s0", "sla_s0", "aggregated")] == pytest.approx(0.975 - 0.95)
    assert named[("sla30way_s0", "baseline_s0", "plain")] == pytest.approx(0.975 - 0.85)


def test_omniglot_runs_table_refuses_files_on_other_episodes(tmp_path):
    table = _load("omniglot_runs_table")
    f1 = _eval(tmp_path / "a.json", [("baseline_s0", "baseline", {"plain": [1, 0, 1, 1]})])
    f2 = _eval(tmp_path / "b.json", [("baseline_s0", "baseline", {"plain": [1, 1, 0, 1]})])
    with pytest.raises(SystemExit, match="not the same episodes"):
        table.collect_tests([f1, f2])
    f3 = _eval(tmp_path / "c.json", [("sla_s0", "sla", {"single": [1, 1, 1, 1]})], seed=1)
    with pytest.raises(SystemExit, match="is not on the episodes"):
        table.collect_tests([f1, f3])
    # disjoint runs on another split: caught through the recorded options and counts, not the scores
    plain = {"dataset_options": {"rotate_classes": False, "test_alphabets": 5}, "classes": 100, "images": 2000}
    rotated = {**plain, "dataset_options": {"rotate_classes": True, "test_alphabets": 5}}
    f4 = _eval(tmp_path / "d.json", [("sla_s0", "sla", {"single": [1, 1, 1, 1]})], split=plain)
    f5 = _eval(tmp_path / "e.json", [("sla_s1", "sla", {"single": [1, 1, 0, 1]})], split=rotated)
    f6 = _eval(tmp_path / "f.json", [("sla_s1", "sla", {"single": [1, 1, 0, 1]})], split={**plain, "classes": 400})
    with pytest.raises(SystemExit, match=r"d\.json \(dataset_options .*rotate_classes"):
        table.collect_tests([f1, f4, f5])
    with pytest.raises(SystemExit, match="classes 400 vs 100"):
        table.collect_tests([f4, f6])
    f7 = _eval(tmp_path / "g.json", [("sla_s1", "sla", {"single": [1, 1, 0, 1]})], split=plain)
    tests, _ = table.collect_tests([f1, f4, f7])  # an older file (f1) says nothing and passes
    assert set(tests["20way1shot"]) == {"baseline_s0", "sla_s0", "sla_s1"}


def _supervised_run(root, name, mode, seed, test, lr=0.1, curve=()):
    d = root / name
    d.mkdir()
    cfg = {"mode": mode, "transforms": "none" if mode == "baseline" else "rotation", "batch_size": 64, "seed": seed,
           "iterations": 6000, "lr": lr, "sd_beta": 1.0, "sd_temperature": 1.0, "sd_start": 0.0}
    (d / "config.json").write_text(json.dumps(cfg))
    rows = [{"kind": "test", "step": step, **{f"acc_{k}": v for k, v in acc.items()}} for step, acc in curve]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "summary.json").write_text(json.dumps({"elapsed_s": 600, "best_iteration": 6000,
                                                "test": {"accuracy": test}}))


def test_sd_study_table_groups_seeds_and_pairs_each_seed_with_its_references(tmp_path):
    table = _load("sd_study_table")
    _supervised_run(tmp_path, "base_s0", "baseline", 0, {"single": 0.70},
                    curve=[(500, {"single": 0.40}), (1000, {"single": 0.50})])
    _supervised_run(tmp_path, "base_s1", "baseline", 1, {"single": 0.68}, curve=[(500, {"single": 0.44})])
    _supervised_run(tmp_path, "sla_s0", "sla", 0, {"single": 0.71, "aggregated": 0.74})
    _supervised_run(tmp_path, "sd_s0", "sla+sd", 0, {"single": 0.69, "aggregated": 0.70, "distilled": 0.72})
    _supervised_run(tmp_path, "sd_s1", "sla+sd", 1, {"single": 0.66, "aggregated": 0.67, "distilled": 0.71})
    _supervised_run(tmp_path, "sd05_s0", "sla+sd", 0, {"single": 0.6, "aggregated": 0.6, "distilled": 0.65}, lr=0.05)
    runs = table.collect(tmp_path)
    assert runs[0]["curve"][1] == {"step": 1000, "images": 64000, "test": {"single": 0.50}}
    groups = {g["setting"]: g for g in table.seed_groups(runs)}
    base = groups["baseline"]
    assert base["seeds"] == [0, 1] and base["test"]["single"]["mean"] == pytest.approx(0.69)
    assert base["test"]["single"]["spread"] == pytest.approx(0.02)
    assert [p["step"] for p in base["curve"]] == [500]  # the steps every seed reached
    assert base["curve"][0]["test"]["single"] == pytest.approx({"mean": 0.42, "min": 0.40, "max": 0.44})
    assert groups["sla"]["test"]["aggregated"]["spread"] is None
    diffs = {(d["setting"], d["inference"], d["minus"]): d for d in table.differences(runs)}
    d = diffs[("sla+sd", "distilled", "baseline:single")]
    assert d["seeds"] == [0, 1] and d["per_seed"] == pytest.approx([0.02, 0.03])
    assert d["mean"] == pytest.approx(0.025) and d["spread"] == pytest.approx(0.01)
    d = diffs[("sla+sd", "single", "sla:single")]  # plain SLA has seed 0 only
    assert d["seeds"] == [0] and d["per_seed"] == pytest.approx([-0.02]) and d["spread"] is None
    assert diffs[("sla", "aggregated", "baseline:single")]["per_seed"] == pytest.approx([0.04])
    assert ("sla", "single", "sla:single") not in diffs and ("baseline", "single", "baseline:single") not in diffs
    # lr 0.05: compared with the lr-0.1 references; the same-lr ones do not exist here
    assert diffs[("sla+sd lr 0.05", "distilled", "baseline:single")]["per_seed"] == pytest.approx([-0.05])
    assert not any(k[2].startswith(("baseline lr", "sla lr")) for k in diffs)


def test_omniglot_runs_table_refuses_unknown_references(tmp_path):
    run = _run(tmp_path, "sla_s0", "sla")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "omniglot_runs_table.py"), str(run),
                        "--references", "baseline_s0", "--out", str(tmp_path / "t.json")],
                       capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "--references baseline_s0" in line and not (tmp_path / "t.json").exists()
