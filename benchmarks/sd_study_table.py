"""Table, curves and plot of the SLA+SD study written by ``benchmarks/sd_study.sh``.

    python benchmarks/sd_study_table.py runs/sd_study [--out JSON] [--plot PNG]

Reads every run directory under OUT (``config.json``, ``metrics.jsonl`` and, once finished,
``summary.json`` of ``fewshot-sla supervised``; an unfinished run contributes its curve so far).
For each run: its settings (mode, iterations, lr, ``--sd-beta``,
``--sd-temperature``, ``--sd-start``, seed), the test accuracy of the selected checkpoint for
every inference, the wall-clock minutes, the last logged training-loss parts, and its curve: the
test accuracy of every inference at every validation step (``--eval-test``) against iterations
and against images through the backbone (``iterations * batch * M``). Prints the table and the
final accuracy of each curve run, writes the JSON (default ``runs/benchmarks/sd_study.json``)
and, with ``--plot``, a PNG of the curves (runs sharing the longest budget; ``--plot-iterations``
names the budgets, one PNG each: the first gets the name given, the others ``<stem>_<N>.png``).

Runs of one setting and budget are grouped across seeds (mean, each seed, spread), and every
setting is compared seed by seed with the baseline of the same budget (lr 0.1), SLA+SD's inferences
also with plain SLA's single view: the same test images, so the spread over seeds is the noise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fewshot_sla.plots import _pyplot, save_figure
from fewshot_sla.rundir import RunDir
from fewshot_sla.transforms import get_transform_set

INFERENCES = ("single", "aggregated", "distilled")
SHOWN = {"baseline": ("single",), "sla": ("single", "aggregated"), "sla+sd": ("distilled", "single", "aggregated")}


def collect_run(run: Path) -> dict:
    cfg = json.loads((run / "config.json").read_text())
    done = (run / "summary.json").exists()
    summary = json.loads((run / "summary.json").read_text()) if done else {}
    metrics = RunDir(run, enabled=False).read_metrics()
    m = get_transform_set(cfg["transforms"]).M if cfg["mode"] != "baseline" else 1
    per_step = cfg["batch_size"] * m
    curve = [{"step": r["step"], "images": r["step"] * per_step,
              "test": {k[4:]: r[k] for k in r if k.startswith("acc_") and k[4:] in INFERENCES}}
             for r in metrics if r.get("kind") == "test" and not r.get("final")]
    train = [r for r in metrics if r.get("kind") == "train"]
    last = train[-1] if train else {}
    return {
        "run": run.name, "finished": done, "mode": cfg["mode"], "seed": cfg["seed"], "iterations": cfg["iterations"],
        "lr": cfg["lr"], "sd_beta": cfg.get("sd_beta", 1.0), "sd_temperature": cfg.get("sd_temperature", 1.0),
        "sd_start": cfg.get("sd_start", 0.0), "images_per_iteration": per_step,
        "best_iteration": summary.get("best_iteration"),
        "minutes": round(summary["elapsed_s"] / 60, 1) if done else None,
        "test": {k: v for k, v in summary["test"]["accuracy"].items() if k in INFERENCES} if done else {},
        "last_train_loss": {k: last[k] for k in last if k.startswith("loss")},
        "curve": curve,
    }


def collect(out: Path) -> list[dict]:
    runs = sorted(p.parent for p in out.glob("*/config.json") if (p.parent / "metrics.jsonl").exists())
    return [collect_run(r) for r in runs]


def _or_dash(x: object) -> str:
    return "-" if x is None else str(x)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def print_table(runs: list[dict]) -> None:
    print("| run | mode | iterations | lr | beta | T | sd-start | min | single | aggregated | distilled "
          "| last train loss (joint / ce / distill) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in runs:
        t, loss = r["test"], r["last_train_loss"]
        parts = " / ".join(f"{loss[k]:.2f}" for k in ("loss_joint", "loss_ce", "loss_distill") if k in loss)
        sd = r["mode"] == "sla+sd"
        name = r["run"] + ("" if r["finished"] else " (unfinished)")
        print(f"| {name} | {r['mode']} | {r['iterations']} | {r['lr']} | {r['sd_beta'] if sd else '-'} "
              f"| {r['sd_temperature'] if sd else '-'} | {r['sd_start'] if sd else '-'} | {_or_dash(r['minutes'])} "
              f"| {_pct(t.get('single'))} | {_pct(t.get('aggregated'))} | {_pct(t.get('distilled'))} "
              f"| {parts or loss.get('loss', '-')} |")


def _mean_spread(values: list[float]) -> dict:
    """The mean of one number over seeds and its spread (max - min; ``None`` for one seed)."""
    return {"mean": sum(values) / len(values), "spread": max(values) - min(values) if len(values) > 1 else None}


def _setting(r: dict) -> str:
    """A run's recipe without its seed: ``sla+sd lr 0.05``, ``sla+sd beta 0``, ``baseline``, ..."""
    parts = [r["mode"]] + ([f"lr {r['lr']}"] if r["lr"] != 0.1 else [])
    if r["mode"] == "sla+sd":
        defaults = {"sd_beta": 1.0, "sd_temperature": 1.0, "sd_start": 0.0}
        names = {"sd_beta": "beta", "sd_temperature": "T", "sd_start": "sd-start"}
        parts += [f"{names[k]} {r[k]}" for k, v in defaults.items() if r[k] != v]
    return " ".join(parts)


def seed_groups(runs: list[dict]) -> list[dict]:
    """Runs of one setting and budget across seeds: per inference, the final test accuracy
    (mean and each seed's) and the mean curve over the steps every seed reached."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in runs:
        groups.setdefault((_setting(r), r["iterations"]), []).append(r)
    out = []
    for (setting, iterations), rs in groups.items():
        steps = sorted(set.intersection(*({p["step"] for p in r["curve"]} for r in rs))) if rs else []
        g = {"setting": setting, "iterations": iterations, "seeds": [r["seed"] for r in rs],
             "runs": [r["run"] for r in rs], "test": {}, "curve": []}
        for inf in SHOWN.get(rs[0]["mode"], ("single",)):
            finals = [r["test"][inf] for r in rs if inf in r["test"]]
            if finals and len(finals) == len(rs):
                stats = _mean_spread(finals)
                g["test"][inf] = {"mean": stats["mean"], "per_seed": finals, "spread": stats["spread"]}
        for step in steps:
            point = {"step": step, "images": step * rs[0]["images_per_iteration"], "test": {}}
            for inf in SHOWN.get(rs[0]["mode"], ("single",)):
                ys = [p["test"][inf] for r in rs for p in r["curve"] if p["step"] == step and inf in p["test"]]
                if len(ys) == len(rs):
                    point["test"][inf] = {"mean": sum(ys) / len(ys), "min": min(ys), "max": max(ys)}
            g["curve"].append(point)
        out.append(g)
    return out


def _references(r: dict) -> list[tuple[str, str]]:
    """What a run is compared with: the baseline's single view at lr 0.1 and at the run's own lr,
    and for SLA+SD also plain SLA's single view at the same two learning rates."""
    lrs = ["lr 0.1"] + ([f"lr {r['lr']}"] if r["lr"] != 0.1 else [])
    modes = ["baseline"] + (["sla"] if r["mode"] == "sla+sd" else [])
    refs = [(m if lr == "lr 0.1" else f"{m} {lr}", "single") for m in modes for lr in lrs]
    return [ref for ref in refs if ref[0] != _setting(r)]


def differences(runs: list[dict]) -> list[dict]:
    """Seed by seed, each inference of each setting minus a reference run of the same budget and
    seed (``_references``); only seeds both have; the spread is max - min over them (None for one
    seed). The test images are the same for every run, so the spread over seeds is the noise."""
    by_key = {(_setting(r), r["iterations"], r["seed"]): r for r in runs}
    out = []
    for first in {(_setting(r), r["iterations"]): r for r in runs}.values():
        setting, iterations = _setting(first), first["iterations"]
        for ref_setting, ref_inf in _references(first):
            for inf in SHOWN.get(first["mode"], ("single",)):
                seeds, values = [], []
                for seed in sorted(k[2] for k in by_key if k[:2] == (setting, iterations)):
                    r, ref = by_key[(setting, iterations, seed)], by_key.get((ref_setting, iterations, seed))
                    if ref is not None and inf in r["test"] and ref_inf in ref["test"]:
                        seeds.append(seed)
                        values.append(r["test"][inf] - ref["test"][ref_inf])
                if values:
                    out.append({"setting": setting, "inference": inf, "minus": f"{ref_setting}:{ref_inf}",
                                "iterations": iterations, "seeds": seeds, "per_seed": values,
                                **_mean_spread(values)})
    return out


def print_differences(diffs: list[dict]) -> None:
    print("\n| setting | inference | minus | iterations | seeds | mean (points) | per seed | spread |")
    print("| --- | --- | --- | ---: | --- | ---: | --- | ---: |")
    for d in diffs:
        spread = "-" if d["spread"] is None else f"{100 * d['spread']:.2f}"
        print(f"| {d['setting']} | {d['inference']} | {d['minus']} | {d['iterations']} "
              f"| {', '.join(map(str, d['seeds']))} | {100 * d['mean']:+.2f} "
              f"| {', '.join(f'{100 * v:+.2f}' for v in d['per_seed'])} | {spread} |")


def print_groups(groups: list[dict]) -> None:
    print("\n| setting | iterations | seeds | single | aggregated | distilled |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for g in groups:
        cells = []
        for inf in INFERENCES:
            t = g["test"].get(inf)
            cells.append("-" if t is None else f"{_pct(t['mean'])} ({', '.join(_pct(x) for x in t['per_seed'])})")
        print(f"| {g['setting']} | {g['iterations']} | {', '.join(map(str, g['seeds']))} | {' | '.join(cells)} |")


def plot(groups: list[dict], png: Path, iterations: int | None = None) -> None:
    try:
        plt = _pyplot()
    except ImportError:
        raise SystemExit("sd_study_table.py: error: --plot needs matplotlib (pip install matplotlib)") from None
    longest = max(g["iterations"] for g in groups) if iterations is None else iterations
    if not any(g["iterations"] == longest and g["curve"] for g in groups):
        raise SystemExit(f"sd_study_table.py: error: no finished run of {longest} iterations with a curve; "
                         "--plot-iterations takes the --iterations of finished runs")
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for c, g in enumerate(gr for gr in groups if gr["iterations"] == longest and gr["curve"]):
        for inf in INFERENCES:
            pts = [p for p in g["curve"] if inf in p["test"]]
            if not pts:
                continue
            style = {"single": "-", "aggregated": "--", "distilled": ":"}[inf]
            mean = [100 * p["test"][inf]["mean"] for p in pts]
            lo = [100 * p["test"][inf]["min"] for p in pts]
            hi = [100 * p["test"][inf]["max"] for p in pts]
            label = f"{g['setting']}: {inf} ({len(g['seeds'])} seed{'s' if len(g['seeds']) > 1 else ''})"
            for ax, xs in ((axes[0], [p["step"] for p in pts]), (axes[1], [p["images"] / 1e3 for p in pts])):
                ax.plot(xs, mean, style, color=colours[c % len(colours)], marker="o", ms=3, label=label)
                if len(g["seeds"]) > 1:
                    ax.fill_between(xs, lo, hi, color=colours[c % len(colours)], alpha=0.12)
    axes[0].set_xlabel("iterations (batch 64)")
    axes[1].set_xlabel("images through the backbone (thousands; SLA: batch x M = 256 per iteration)")
    axes[0].set_ylabel("CIFAR-10 test accuracy (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Conv-4 on CIFAR-10, lr x0.1 at 50% and 75% of {longest} iterations: mean over seeds "
                 "(band: min-max)")
    print(f"wrote {save_figure(fig, png)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the OUT_DIR of sd_study.sh")
    ap.add_argument("--out", dest="json_out", type=Path, default=Path("runs/benchmarks/sd_study.json"),
                    help="write the runs and curves as JSON here")
    ap.add_argument("--plot", type=Path, default=None, help="write the curves as a PNG here")
    ap.add_argument("--plot-iterations", type=int, nargs="+", default=None, metavar="N",
                    help="the budgets to plot, one PNG each (default: the longest); the first is written "
                         "to --plot, the others next to it as <stem>_<N>.png")
    args = ap.parse_args()
    runs = collect(args.out)
    if not runs:
        ap.exit(2, f"sd_study_table.py: error: {args.out} holds no run (*/config.json and metrics.jsonl); "
                   f"run bash benchmarks/sd_study.sh DATA_ROOT {args.out} first\n")
    print_table(runs)
    finished = [r for r in runs if r["finished"]]
    groups = seed_groups(finished)
    print_groups(groups)
    diffs = differences(finished)
    print_differences(diffs)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps({"runs": runs, "settings": groups, "differences": diffs}, indent=1) + "\n")
    print(f"\nwrote {args.json_out}")
    if args.plot:
        budgets = args.plot_iterations or [None]
        for i, n in enumerate(budgets):
            png = args.plot if i == 0 else args.plot.with_name(f"{args.plot.stem}_{n}{args.plot.suffix}")
            plot(groups, png, n)


if __name__ == "__main__":
    main()
