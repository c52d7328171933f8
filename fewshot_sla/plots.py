"""PNG plots (matplotlib, an optional extra imported only here): training/validation curves of a
run's ``metrics.jsonl`` and per-episode accuracy histograms of an evaluation report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .rundir import RunDir, run_name

__all__ = ["plot_curves", "plot_histogram", "plot_paths", "save_figure"]


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("plotting needs matplotlib, which is not installed; install it with "
                          "`pip install matplotlib` (or `pip install fewshot-sla[plot]`)") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out ``fig``, write it as a 100-dpi PNG at ``path`` (creating its folder) and close it."""
    from .writable import writing

    path = Path(path)
    fig.tight_layout()
    try:
        with writing(path, "the plot", "pass another --output DIR"):
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=100)
    finally:
        _pyplot().close(fig)
    return path


def plot_curves(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Training loss/accuracy per logged step and validation accuracy (with 95% CI) per epoch
    of the run in ``run_dir``, from its ``metrics.jsonl``. Returns the PNG path."""
    run = RunDir(run_dir, enabled=False)
    records = run.read_metrics()
    if not records:
        raise FileNotFoundError(f"{run.path / 'metrics.jsonl'} is missing or empty: {run_dir} has logged no training "
                                "or validation rows; pass the directory of a meta-train or supervised run")
    plt = _pyplot()
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    steps = [r["step"] for r in train]
    axes[0].plot(steps, [r["loss"] for r in train], label="total")
    for k in sorted({k for r in train for k in r if k.startswith("loss_")}):
        axes[0].plot(steps, [r.get(k, float("nan")) for r in train], label=k[5:], alpha=0.7)
    axes[0].set(xlabel="step", ylabel="training loss", title="training loss")
    axes[0].legend()
    for k in sorted({k for r in train for k in r if k == "acc" or k.startswith("acc_")}):
        label = "objective" if k == "acc" else k[4:]
        axes[1].plot(steps, [100 * r.get(k, float("nan")) for r in train], label=label)
    axes[1].set(xlabel="step", ylabel="accuracy (%)", title="training accuracy")
    axes[1].legend()
    if val:
        epochs = [r["epoch"] for r in val]
        for k in sorted({k for r in val for k in r if k.startswith("acc_")}):
            name = k[4:]
            m = [100 * r.get(k, float("nan")) for r in val]
            ci = [100 * r.get(f"ci95_{name}", 0.0) for r in val]
            axes[2].errorbar(epochs, m, yerr=ci, capsize=3, marker="o", label=name)
        axes[2].set(xlabel="epoch", ylabel="accuracy (%)", title="validation accuracy (95% CI)")
        axes[2].legend()
    else:
        axes[2].set_axis_off()
    fig.suptitle(str(run.path))
    return save_figure(fig, Path(output or run.path) / "curves.png")


def plot_histogram(report: dict[str, Any] | str | Path, output: str | Path | None = None) -> Path:
    """Histogram of the per-episode accuracies of every model and inference of an evaluation
    report (the JSON ``fewshot-sla eval`` writes). Returns the PNG path."""
    src = None
    if not isinstance(report, dict):
        src = Path(report)
        if not src.is_file():
            raise FileNotFoundError(f"evaluation report {src} not found; pass a JSON file written by fewshot-sla eval")
        report = json.loads(src.read_text())
    if "models" not in report:
        raise ValueError(f"{src or 'report'} is not an evaluation report of fewshot-sla eval (no 'models')")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = [i / 40 for i in range(41)]
    for m in report["models"]:
        for inf, r in m["results"].items():
            label = f"{run_name(m['checkpoint'])} {inf}: {100 * r['mean']:.2f} +- {100 * r['ci95']:.2f}%"
            ax.hist([100 * a for a in r["accuracies"]], bins=[100 * b for b in bins], alpha=0.5, label=label)
    ax.set(xlabel="episode accuracy (%)", ylabel="episodes",
           title=f"{report.get('dataset', '')} {report['split']}: {report['episodes']} episodes, "
                 f"{report.get('n_way')}-way {report.get('k_shot')}-shot")
    ax.legend(fontsize=8)
    if output:
        out = Path(output)
    elif src is not None:
        out = src.parent
    else:
        out = Path(report.get("output", "eval.json")).parent
    stem = src.stem if src is not None else Path(report.get("output", "eval")).stem
    return save_figure(fig, out / f"{stem}_hist.png")


def plot_paths(paths: Sequence[str | Path], output: str | Path | None = None) -> list[Path]:
    """Plot every run directory (curves + histograms of its ``eval_*.json``) and JSON file given."""
    if output:  # before any plot: an unwritable --output is one line
        from .writable import check_writable_dir

        check_writable_dir(output, "the plots into", "pass another --output DIR")
    written = []
    for p in map(Path, paths):
        if p.is_dir():
            written.append(plot_curves(p, output))
            for js in sorted(p.glob("eval_*.json")):
                written.append(plot_histogram(js, output))
        elif p.suffix == ".json":
            written.append(plot_histogram(p, output))
        else:
            raise FileNotFoundError(f"{p} is neither a run directory nor an evaluation JSON file")
    return written
