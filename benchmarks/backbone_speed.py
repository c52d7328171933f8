"""Backbone speed: forward and forward+backward, contiguous vs channels_last.

Cases: conv4 and resnet12 at 32 px (batch 100) and 84 px (batch 20; resnet12 at 84 px
runs at most 2 timed repetitions, it is slow on CPU). Models are in training mode
(BatchNorm batch statistics, dropout/DropBlock active after the ramp, as during
meta-training); "forward" runs under ``torch.no_grad``, "forward+backward" backpropagates
``out.sum()``. For channels_last both the model and the input are converted. Reported
time is the median over ``--reps`` runs after one warm-up run.

    python benchmarks/backbone_speed.py [--device cpu|cuda|all] [--reps 3] \
        [--out benchmarks/results/backbone_speed.json]

Default output: runs/benchmarks/backbone_speed.json; the committed benchmarks/results/backbone_speed.json
changes only with an explicit ``--out benchmarks/results/backbone_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from fewshot_sla.backbones import get_backbone

# (backbone, image size, batch, max reps)
CASES = [
    ("conv4", 32, 100, None),
    ("resnet12", 32, 100, None),
    ("conv4", 84, 20, None),
    ("resnet12", 84, 20, 2),
]
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, reps: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``reps`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(name: str, size: int, batch: int, layout: str, device: torch.device, reps: int) -> dict:
    """Forward and forward+backward milliseconds for one case."""
    torch.manual_seed(0)
    fmt = LAYOUTS[layout]
    model = get_backbone(name, in_channels=3, image_size=size).to(device, memory_format=fmt)
    model.train()
    if hasattr(model, "set_drop_step"):
        model.set_drop_step(10**6)  # DropBlock at its final rate
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)

    def forward():
        with torch.no_grad():
            model(x)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    t_f = timeit(forward, reps, device)
    t_fb = timeit(forward_backward, reps, device)
    return {
        "backbone": name,
        "image_size": size,
        "batch": batch,
        "layout": layout,
        "device": device.type,
        "reps": reps,
        "out_dim": model.out_dim,
        "forward_ms": 1e3 * t_f,
        "forward_backward_ms": 1e3 * t_fb,
        "forward_img_per_s": batch / t_f,
        "forward_backward_img_per_s": batch / t_fb,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--device",
        default="all",
        choices=["cpu", "cuda", "all"],
        help="'all' = cpu, plus cuda when available (default)",
    )
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per case (3)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/benchmarks/backbone_speed.json"),
        help="JSON output path (default: runs/benchmarks/backbone_speed.json)",
    )
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False; use --device cpu")
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]

    rows = []
    header = (
        f"{'device':6} {'backbone':9} {'px':>3} {'batch':>5} {'layout':13} "
        f"{'fwd ms':>9} {'fwd+bwd ms':>11} {'fwd img/s':>10} {'f+b img/s':>10}"
    )
    print(header)
    print("-" * len(header))
    for dev in devices:
        device = torch.device(dev)
        for name, size, batch, max_reps in CASES:
            reps = args.reps if max_reps is None else min(args.reps, max_reps)
            for layout in LAYOUTS:
                r = measure(name, size, batch, layout, device, reps)
                rows.append(r)
                print(
                    f"{dev:6} {name:9} {size:>3} {batch:>5} {layout:13} "
                    f"{r['forward_ms']:9.1f} {r['forward_backward_ms']:11.1f} "
                    f"{r['forward_img_per_s']:10.1f} {r['forward_backward_img_per_s']:10.1f}",
                    flush=True,
                )
    result = {
        "benchmark": "backbone_speed",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "reps": args.reps,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
