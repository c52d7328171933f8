"""Table, curves and plot of the SLA+SD study written by ``benchmarks/sd_study.sh``.

    python benchmarks/sd_study_table.py runs/sd_study [--out JSON] [--plot PNG]

Reads every run directory under OUT (``config.json``, ``metrics.jsonl``, ``summary.json`` of
``fewshot-sla supervised``). For each run: its settings (mode, iterations, lr, ``--sd-beta``,
``--sd-temperature``, ``--sd-start``, seed), the test accuracy of the selected checkpoint for
every inference, the wall-clock minutes, the last logged training-loss parts, and its curve: the
test accuracy of every inference at every validation step (``--eval-test``) against iterations
and against images through the backbone (``iterations * batch * M``). Prints the table and the
final accuracy of each curve run, writes the JSON (default ``runs/benchmarks/sd_study.json``)
and, with ``--plot``, a PNG of the curves (runs sharing the longest budget).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

INFERENCES = ("single", "aggregated", "distilled")
SHOWN = {"baseline": ("single",), "sla": ("single", "aggregated"), "sla+sd": ("distilled", "single", "aggregated")}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def collect_run(run: Path) -> dict:
    cfg = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    metrics = _rows(run / "metrics.jsonl")
    m = summary["M"] if cfg["mode"] in ("sla", "sla+sd", "da", "mt") else 1
    per_step = cfg["batch_size"] * m
    curve = [{"step": r["step"], "images": r["step"] * per_step,
              "test": {k[4:]: r[k] for k in r if k.startswith("acc_") and k[4:] in INFERENCES}}
             for r in metrics if r.get("kind") == "test" and not r.get("final")]
    train = [r for r in metrics if r.get("kind") == "train"]
    last = train[-1] if train else {}
    return {
        "run": run.name, "mode": cfg["mode"], "seed": cfg["seed"], "iterations": summary["total_iterations"],
        "lr": cfg["lr"], "sd_beta": cfg.get("sd_beta", 1.0), "sd_temperature": cfg.get("sd_temperature", 1.0),
        "sd_start": cfg.get("sd_start", 0.0), "images_per_iteration": per_step,
        "best_iteration": summary["best_iteration"], "minutes": round(summary["elapsed_s"] / 60, 1),
        "test": {k: v for k, v in summary["test"]["accuracy"].items() if k in INFERENCES},
        "last_train_loss": {k: last[k] for k in last if k.startswith("loss")},
        "curve": curve,
    }


def collect(out: Path) -> list[dict]:
    runs = sorted(p.parent for p in out.glob("*/summary.json"))
    return [collect_run(r) for r in runs]


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
        print(f"| {r['run']} | {r['mode']} | {r['iterations']} | {r['lr']} | {r['sd_beta'] if sd else '-'} "
              f"| {r['sd_temperature'] if sd else '-'} | {r['sd_start'] if sd else '-'} | {r['minutes']} "
              f"| {_pct(t.get('single'))} | {_pct(t.get('aggregated'))} | {_pct(t.get('distilled'))} "
              f"| {parts or loss.get('loss', '-')} |")


def plot(runs: list[dict], png: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("sd_study_table.py: error: --plot needs matplotlib (pip install matplotlib)") from None
    longest = max(r["iterations"] for r in runs)
    curves = [r for r in runs if r["iterations"] == longest and r["curve"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for r in curves:
        for inf in SHOWN.get(r["mode"], ("single",)):
            xs = [p["step"] for p in r["curve"]]
            ys = [100 * p["test"][inf] for p in r["curve"] if inf in p["test"]]
            if len(ys) != len(xs):
                continue
            label = f"{r['run']}: {inf}"
            style = {"single": "-", "aggregated": "--", "distilled": ":"}[inf]
            axes[0].plot(xs, ys, style, marker="o", ms=3, label=label)
            axes[1].plot([p["images"] / 1e3 for p in r["curve"]], ys, style, marker="o", ms=3, label=label)
    axes[0].set_xlabel("iterations")
    axes[1].set_xlabel("images through the backbone (thousands; SLA: batch x M)")
    axes[0].set_ylabel("CIFAR-10 test accuracy (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Conv-4 on CIFAR-10 (CPU budget), lr x0.1 at 50% and 75% of {longest} iterations")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the OUT_DIR of sd_study.sh")
    ap.add_argument("--out", dest="json_out", type=Path, default=Path("runs/benchmarks/sd_study.json"),
                    help="write the runs and curves as JSON here")
    ap.add_argument("--plot", type=Path, default=None, help="write the curves as a PNG here")
    args = ap.parse_args()
    runs = collect(args.out)
    if not runs:
        ap.exit(2, f"sd_study_table.py: error: {args.out} holds no finished run (*/summary.json); "
                   f"run bash benchmarks/sd_study.sh DATA_ROOT {args.out} first\n")
    print_table(runs)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    print(f"\nwrote {args.json_out}")
    if args.plot:
        plot(runs, args.plot)


if __name__ == "__main__":
    main()
