"""Supervised training-step speed: images per second at M = 1 (baseline) and M = 4 (SLA+SD
with rotations), contiguous vs channels_last, on CPU and (when available) GPU.

One step is what the training loop does per iteration: index a uint8 batch, batched
augmentation (crop 32 pad 4 + flip + normalise), the M transforms, forward, the mode's
loss, backward, SGD step and LR-scheduler step. Reported: median seconds per step after
one warm-up step, ``images/s`` = batch / time (original images) and ``rows/s`` = batch * M /
time (what the backbone processes).

    python benchmarks/supervised_step.py [--device cpu|cuda|all] [--batch 128] [--reps 3] \
        [--backbone resnet32] [--amp] [--out benchmarks/results/supervised_step.json]

Default output: runs/benchmarks/supervised_step.json; the committed benchmarks/results/supervised_step.json
changes only with an explicit ``--out benchmarks/results/supervised_step.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from fewshot_sla.data.augment import get_augmentation
from fewshot_sla.optim import build_optimizer, piecewise_scheduler
from fewshot_sla.supervised.evaluate import autocast
from fewshot_sla.supervised.losses import supervised_loss
from fewshot_sla.supervised.model import build_model
from fewshot_sla.transforms import get_transform_set

CASES = [("baseline", "none"), ("sla+sd", "rotation")]  # M = 1, M = 4
LAYOUTS = ("contiguous", "channels_last")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(mode: str, transforms: str, layout: str, device: torch.device, batch: int, reps: int,
            backbone: str, amp: bool) -> dict:
    torch.manual_seed(0)
    tset = get_transform_set(transforms)
    M = tset.M
    cl = layout == "channels_last"
    model = build_model(backbone, 10, M, mode).to(device, memory_format=torch.channels_last if cl else
                                                   torch.contiguous_format)
    model.train()
    opt = build_optimizer("sgd", model.parameters(), 0.1, 0.9, 1e-4, nesterov=False)
    sched = piecewise_scheduler(opt, (1000,), (1.0, 0.1))
    aug = get_augmentation("cifar10", "sla")
    images = torch.randint(0, 256, (batch * 4, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (batch * 4,), device=device)
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        idx = torch.randint(0, images.shape[0], (batch,), generator=gen).to(device)
        x = aug(images[idx], generator=gen)
        xt = tset(x)
        if cl:
            xt = xt.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            out = model(xt)
        loss = supervised_loss(mode, {k: v.float() for k, v in out.items()}, labels[idx], M)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()

    step()
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {"device": device.type, "mode": mode, "transforms": transforms, "M": M, "layout": layout,
            "batch": batch, "backbone": backbone, "amp": amp and device.type == "cuda", "step_s": t,
            "images_per_s": batch / t, "rows_per_s": batch * M / t, "reps": reps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="all", choices=("cpu", "cuda", "all"))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--backbone", default="resnet32")
    ap.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--out", default="runs/benchmarks/supervised_step.json",
                    help="JSON output path (default: runs/benchmarks/supervised_step.json)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = []
    if args.device in ("cpu", "all"):
        devices.append(torch.device("cpu"))
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available; use --device cpu")
    rows = []
    print(f"{'device':<6} {'mode':<8} {'M':>2} {'layout':<13} {'batch':>5} {'step s':>8} {'images/s':>9} "
          f"{'rows/s':>9}")
    for dev in devices:
        for mode, tr in CASES:
            for layout in LAYOUTS:
                r = measure(mode, tr, layout, dev, args.batch, args.reps, args.backbone, args.amp)
                rows.append(r)
                print(f"{r['device']:<6} {r['mode']:<8} {r['M']:>2} {r['layout']:<13} {r['batch']:>5} "
                      f"{r['step_s']:>8.3f} {r['images_per_s']:>9.1f} {r['rows_per_s']:>9.1f}", flush=True)
    info = {
        "benchmark": "supervised_step",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "results": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
