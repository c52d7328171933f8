"""Validation curves and test results of Omniglot meta-training runs (ProtoNet baseline, SLA and
SLA+SD), written by ``benchmarks/omniglot_sd.sh`` and ``benchmarks/omniglot_sla_variants.sh``.

    python benchmarks/omniglot_runs_table.py RUN_DIR... --evals EVAL_JSON... [--references RUN...]
        [--out JSON] [--plot PNG]

For each run directory of ``fewshot-sla meta-train``: its settings (mode, way, steps,
``--sd-start``), training minutes, and its curve: the validation accuracy of every inference at
every validation step, against steps and against images through the backbone per step
(``n_way * (k_shot + n_query) * M``); a run validated on rotated characters as classes (its
``rotate_classes`` option) is marked and left out of the plot. From the ``fewshot-sla eval
--output`` files: the test accuracy of each run's inferences per setting and, on the same
episodes, each inference of every other run minus each inference of the reference runs of the same
training seed (paired differences, :func:`fewshot_sla.stats.paired_difference`); the references
are the runs named by ``--references``, by default the baseline and plain SLA runs (then the other
runs are the SLA+SD ones). Files of one setting must share their episodes: a run evaluated in two
of them must score the same on every episode.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fewshot_sla.plots import _pyplot, save_figure
from fewshot_sla.record import RecordMismatch, check_pairable
from fewshot_sla.rundir import RunDir, run_name
from fewshot_sla.stats import paired_difference
from fewshot_sla.transforms import get_transform_set

INFERENCES = ("plain", "single", "aggregated", "distilled")


def collect_run(run: Path) -> dict:
    cfg = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    m = 1 if cfg["mode"] == "baseline" else get_transform_set(cfg["transforms"]).M
    per_step = cfg["n_way"] * (cfg["k_shot"] + cfg["n_query"]) * cfg["tasks_per_batch"] * m
    curve = [{"step": r["step"], "images": r["step"] * per_step,
              "val": {k[4:]: r[k] for k in r if k.startswith("acc_") and k[4:] in INFERENCES}}
             for r in RunDir(run, enabled=False).read_metrics() if r.get("kind") == "val"]
    return {
        "run": run.name, "mode": cfg["mode"], "head": cfg["head"], "n_way": cfg["n_way"], "seed": cfg["seed"],
        "sd_start": cfg.get("sd_start", 0.0), "steps": cfg["epochs"] * cfg["episodes_per_epoch"]
        // cfg["tasks_per_batch"], "images_per_step": per_step, "finished": bool(summary),
        "train_minutes": round(summary["train_time_s"] / 60, 1) if summary else None,
        "best_step": summary.get("best", {}).get("step"), "curve": curve,
        # validated with rotated characters as extra classes: not the others' validation episodes
        "val_rotated_classes": bool(cfg.get("dataset_options", {}).get("rotate_classes", False)),
    }


SPLIT_FIELDS = ("dataset_options", "classes", "images")


def _setting(ev: dict) -> str:
    return f"{ev['n_way']}way{ev['k_shot']}shot"


def collect_tests(files: list[Path]) -> tuple[dict, dict]:
    """``{setting: {run: {inference: {mean, ci95}}}}`` and the per-episode accuracies
    ``{setting: {(run, inference): [...]}}``; refuses files of one setting with other episodes, or
    whose reproducibility records differ (:func:`fewshot_sla.record.check_pairable`)."""
    tests: dict[str, dict] = {}
    per_episode: dict[str, dict] = {}
    protocol: dict[str, tuple] = {}
    splits: dict[str, dict] = {}
    records: dict[str, list] = {}
    for f in files:
        ev = json.loads(f.read_text())
        s = _setting(ev)
        records.setdefault(s, []).append((str(f), ev.get("record")))
        try:
            check_pairable(records[s])
        except RecordMismatch as e:
            raise SystemExit(f"omniglot_runs_table.py: error: {e}") from None
        key = (ev["episodes"], ev["n_query"], ev["seed"], ev["split"], ev["dataset"])
        if protocol.setdefault(s, key) != key:
            raise SystemExit(f"omniglot_runs_table.py: error: {f} is not on the episodes of the other {s} files "
                             f"(episodes, queries, seed, split, dataset {key} vs {protocol[s]})")
        # the split itself (rotate_classes, held-out alphabets), recorded by `fewshot-sla eval` since
        # 2026-12; older files do not say, and are compared through their per-episode scores only
        split = {k: ev[k] for k in SPLIT_FIELDS if k in ev}
        seen = splits.setdefault(s, {})
        for k, v in split.items():
            if seen.setdefault(k, (v, f))[0] != v:
                raise SystemExit(f"omniglot_runs_table.py: error: {f} is not on the {ev['split']} split of "
                                 f"{seen[k][1]} ({k} {v} vs {seen[k][0]}); evaluate both with the same "
                                 "--dataset-options")
        for mdl in ev["models"]:
            run = run_name(mdl["checkpoint"])
            for inf, r in mdl["results"].items():
                old = per_episode.setdefault(s, {}).get((run, inf))
                if old is not None and old != r["accuracies"]:
                    raise SystemExit(f"omniglot_runs_table.py: error: {run}:{inf} scores differently in {f} "
                                     f"than in another {s} file: not the same episodes")
                per_episode[s][(run, inf)] = r["accuracies"]
                tests.setdefault(s, {}).setdefault(run, {})[inf] = {"mean": r["mean"], "ci95": r["ci95"]}
    return tests, per_episode


def paired(runs: list[dict], per_episode: dict, references: list[str] | None = None) -> list[dict]:
    """Each inference of every non-reference run minus each inference of every reference run that
    was trained with the same seed; ``references`` (run names) default to the baseline and SLA runs."""
    if references is None:
        references = [r["run"] for r in runs if r["mode"] in ("baseline", "sla")]
    seed = {r["run"]: r["seed"] for r in runs}
    out = []
    for s, acc in per_episode.items():
        for (a, inf_a), xa in acc.items():
            if a not in seed or a in references:
                continue
            for (b, inf_b), xb in acc.items():
                if b in references and seed.get(b) == seed[a]:
                    d = paired_difference(xa, xb).as_dict()
                    out.append({"setting": s, "a": a, "inference_a": inf_a, "b": b, "inference_b": inf_b,
                                **{k: d[k] for k in ("mean", "ci95", "n")}})
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def plot(runs: list[dict], png: Path) -> None:
    try:
        plt = _pyplot()
    except ImportError as e:
        raise SystemExit(f"omniglot_runs_table.py: error: --plot: {e}") from None
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    style = {"plain": "-", "single": "-", "aggregated": "--", "distilled": ":"}
    for c, r in enumerate(r for r in runs if not r["val_rotated_classes"]):
        for inf in INFERENCES:
            pts = [p for p in r["curve"] if inf in p["val"]]
            ys = [100 * p["val"][inf] for p in pts]
            for ax, xs in ((axes[0], [p["step"] for p in pts]), (axes[1], [p["images"] / 1e6 for p in pts])):
                if pts:
                    ax.plot(xs, ys, style[inf], color=colours[c % len(colours)], marker="o", ms=3,
                            label=f"{r['run']}: {inf}")
    for ax, xlabel in zip(axes, ("steps (one episode each)", "images through the backbone (millions)")):
        ax.set(xlabel=xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy, 100 20-way 1-shot episodes (%)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Omniglot, Conv-4 28 px, Adam 1e-3: validation curves")
    print(f"wrote {save_figure(fig, png)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", help="run directories of fewshot-sla meta-train")
    ap.add_argument("--evals", type=Path, nargs="*", default=[], help="fewshot-sla eval --output files")
    ap.add_argument("--references", nargs="+", default=None, metavar="RUN",
                    help="names of the run directories the others are paired against, seed by seed "
                         "(default: the baseline and SLA runs)")
    ap.add_argument("--out", dest="json_out", type=Path, default=Path("runs/benchmarks/omniglot_runs.json"),
                    help="write the curves and tests as JSON here")
    ap.add_argument("--plot", type=Path, default=None, help="write the curves as a PNG here")
    args = ap.parse_args()
    missing = [str(r) for r in args.runs if not (r / "config.json").exists()]
    if missing:
        ap.exit(2, f"omniglot_runs_table.py: error: {', '.join(missing)} holds no meta-train run (config.json); "
                   "run bash benchmarks/omniglot_sd.sh (or omniglot_sla_variants.sh) first\n")
    runs = [collect_run(r) for r in args.runs]
    unknown = sorted(set(args.references or []) - {r["run"] for r in runs})
    if unknown:
        ap.exit(2, f"omniglot_runs_table.py: error: --references {', '.join(unknown)}: not among the run "
                   "directories given; name reference runs by their directory's name\n")
    tests, per_episode = collect_tests(args.evals)
    diffs = paired(runs, per_episode, args.references)
    steps = sorted({p["step"] for r in runs for p in r["curve"]})
    print("validation accuracy (%) by step")
    print("| run | inference | " + " | ".join(map(str, steps)) + " |")
    print("| --- | --- |" + " ---: |" * len(steps))
    for r in runs:
        for inf in INFERENCES:
            if any(inf in p["val"] for p in r["curve"]):
                by_step = {p["step"]: p["val"].get(inf) for p in r["curve"]}
                name = r["run"] + (" (rotated classes)" if r["val_rotated_classes"] else "")
                print(f"| {name} | {inf} | " + " | ".join(_pct(by_step.get(s)) for s in steps) + " |")
    for s, by_run in tests.items():
        print(f"\ntest, {s} (1000 episodes): " + "; ".join(
            f"{run}:{inf} {_pct(v['mean'])} ± {_pct(v['ci95'])}" for run, infs in by_run.items()
            for inf, v in infs.items()))
    for d in diffs:
        print(f"  {d['setting']}: {d['a']}:{d['inference_a']} - {d['b']}:{d['inference_b']}: "
              f"{100 * d['mean']:+.2f} ± {100 * d['ci95']:.2f}")
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps({"runs": runs, "test": tests, "paired": diffs}, indent=1) + "\n")
    print(f"\nwrote {args.json_out}")
    if args.plot:
        plot(runs, args.plot)


if __name__ == "__main__":
    main()
