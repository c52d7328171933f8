"""Meta-training throughput: episodes per second of whole optimiser steps.

Runs ``MetaTrainer.train_step`` (episode gather, on-device augmentation, NM-way expansion, one
backbone call, head, loss, backward, SGD step) on synthetic data for each combination of
``--channels-last`` and ``--amp`` asked for, and prints a table of episodes/s (the figure the
multi-GPU issue asks for on 1 GPU with AMP and channels_last). Under ``torchrun`` every
process runs its share of each step, so the table reports the global rate.

    python benchmarks/meta_train_speed.py                                 # CPU: Conv-4, 28 px, 5-way 1-shot SLA
    python benchmarks/meta_train_speed.py --backbone resnet12 --image-size 84 --channels 3 \\
        --head svm --n-way 5 --k-shot 5 --device cuda --amp none bf16 --channels-last 0 1
    torchrun --standalone --nproc-per-node 4 benchmarks/meta_train_speed.py --device cuda ...

Writes ``runs/benchmarks/meta_train_speed.json`` from rank 0; the committed
``benchmarks/results/meta_train_speed.json`` changes only with an explicit ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from fewshot_sla.meta.config import MetaTrainConfig
from fewshot_sla.meta.train import MetaTrainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synthetic import synthetic_dataset  # noqa: E402 - the tests' fixture dataset


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Wait for ``device``'s queued work: ``torch.cuda.synchronize(device)`` on CUDA (the device in
    use, which under torchrun or ``--device cuda:K`` need not be the current one), else nothing."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def measure(cfg: MetaTrainConfig, data, steps: int, warmup: int) -> dict:
    """Episodes/s and seconds per step of ``steps`` training steps after ``warmup`` ones."""
    with tempfile.TemporaryDirectory() as d:
        trainer = MetaTrainer(dataclasses.replace(cfg, run_dir=str(Path(d) / "run"), test_episodes=0), {"train": data})
        for _ in range(warmup):
            trainer.train_step()
        sync = synchronizer(trainer.device)
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        sync()
        dt = time.perf_counter() - t0
        return {"episodes_per_s": steps * cfg.tasks_per_batch / dt, "s_per_step": dt / steps,
                "device": str(trainer.device), "world_size": trainer.dist.world_size, "is_main": trainer.dist.is_main}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="conv4")
    p.add_argument("--head", default="protonet")
    p.add_argument("--mode", default="sla")
    p.add_argument("--transforms", default="rotation")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--n-way", type=int, default=5)
    p.add_argument("--k-shot", type=int, default=1)
    p.add_argument("--n-query", type=int, default=6)
    p.add_argument("--tasks-per-batch", type=int, default=8)
    p.add_argument("--augment", default="none")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", nargs="+", default=["none"], help="autocast dtypes to try: none bf16 fp16 (CUDA)")
    p.add_argument("--channels-last", nargs="+", type=int, default=[0, 1])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", default="runs/benchmarks/meta_train_speed.json",
                   help="JSON output path (default: runs/benchmarks/meta_train_speed.json)")
    a = p.parse_args()

    data = synthetic_dataset(max(64, a.n_way), a.k_shot + a.n_query + 4, a.image_size, a.channels, seed=0)
    rows = []
    for amp in a.amp:
        for cl in a.channels_last:
            cfg = MetaTrainConfig(
                dataset="folder", backbone=a.backbone, head=a.head, mode=a.mode,
                transforms="none" if a.mode == "baseline" else a.transforms, image_size=a.image_size,
                n_way=a.n_way, k_shot=a.k_shot, n_query=a.n_query, tasks_per_batch=a.tasks_per_batch,
                episodes_per_epoch=a.tasks_per_batch * (a.steps + a.warmup), val_episodes=0, augment=a.augment,
                device=a.device, amp=amp, channels_last=bool(cl), quiet=True,
            )
            r = measure(cfg, data, a.steps, a.warmup)
            rows.append({"backbone": a.backbone, "head": a.head, "mode": a.mode, "image_size": a.image_size,
                         "way_shot_query": f"{a.n_way}/{a.k_shot}/{a.n_query}", "tasks_per_batch": a.tasks_per_batch,
                         "amp": amp, "channels_last": bool(cl), **r})
    if not rows[0]["is_main"]:
        return
    print(f"{'device':<8} {'procs':>5} {'amp':<5} {'chan_last':<9} {'s/step':>8} {'episodes/s':>11}")
    for r in rows:
        print(f"{r['device']:<8} {r['world_size']:>5} {r['amp']:<5} {r['channels_last']!s:<9} "
              f"{r['s_per_step']:>8.3f} {r['episodes_per_s']:>11.2f}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
           "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    out.write_text(json.dumps({"env": env, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
