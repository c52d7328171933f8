"""Episode pipeline cost next to the backbone's forward time.

For a 5-way 5-shot 15-query episode expanded by rotation (M = 4) at 32 and 84 px: the time to
sample the episode (indices), collate it (one gather from a uint8 dataset tensor), convert to
float and expand it NM-way, next to the Conv-4 and ResNet-12 forward time on the expanded
episode (5*(5+15)*4 = 400 images). Target: the pipeline costs under 5% of the forward.

    python benchmarks/episode_pipeline.py [--device cpu] [--reps 3] [--out benchmarks/results/episode_pipeline.json]

Default output: runs/benchmarks/episode_pipeline.json; the committed benchmarks/results/episode_pipeline.json
changes only with an explicit ``--out benchmarks/results/episode_pipeline.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from fewshot_sla.backbones import get_backbone
from fewshot_sla.episodes import EpisodeSampler, collate_episodes, expand_episodes
from fewshot_sla.transforms import get_transform_set

N_WAY, K_SHOT, N_QUERY = 5, 5, 15


def timeit(fn, reps: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``reps`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def measure(size: int, labels: np.ndarray, device: torch.device, reps: int) -> list[dict]:
    """Pipeline and forward times for one image size."""
    tset = get_transform_set("rotation")
    images = torch.randint(0, 256, (len(labels), 3, size, size), dtype=torch.uint8)
    sampler = EpisodeSampler(labels, N_WAY, K_SHOT, N_QUERY, n_episodes=10**6, seed=0)
    counter = iter(range(10**6))

    def sample() -> list[int]:
        return sampler.episode(next(counter))

    def to_float(x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255)

    def pipeline():
        batch = collate_episodes(images, [sample()], N_WAY, K_SHOT, N_QUERY).to(device)
        return expand_episodes(batch.map_images(to_float), tset)

    t_sample = timeit(sample, reps * 10, device)
    t_pipe = timeit(pipeline, reps * 10, device)
    ex = pipeline()
    x = torch.cat([ex.support.flatten(0, 1), ex.query.flatten(0, 1)])
    rows = []
    for name in ("conv4", "resnet12"):
        model = get_backbone(name, in_channels=3, image_size=size).to(device).eval()
        with torch.no_grad():
            t_fwd = timeit(lambda m=model: m(x), reps, device)
        rows.append(
            {
                "size": size,
                "backbone": name,
                "images": int(x.shape[0]),
                "sample_ms": 1e3 * t_sample,
                "pipeline_ms": 1e3 * t_pipe,
                "forward_ms": 1e3 * t_fwd,
                "pipeline_pct_of_forward": 100 * t_pipe / t_fwd,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 84])
    ap.add_argument("--out", default="runs/benchmarks/episode_pipeline.json",
                    help="JSON output path (default: runs/benchmarks/episode_pipeline.json)")
    args = ap.parse_args()
    device = torch.device(args.device)
    # a synthetic uint8 dataset shaped like mini-ImageNet's training split: 64 classes x 600 images
    labels = np.repeat(np.arange(64), 600)
    rows = [r for size in args.sizes for r in measure(size, labels, device, args.reps)]
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"{'px':>4} {'backbone':>9} {'images':>6} {'sample ms':>10} {'pipeline ms':>12} {'forward ms':>11} "
          f"{'pipe/fwd':>9}")
    for r in rows:
        print(
            f"{r['size']:>4} {r['backbone']:>9} {r['images']:>6} {r['sample_ms']:>10.2f} {r['pipeline_ms']:>12.2f} "
            f"{r['forward_ms']:>11.1f} {r['pipeline_pct_of_forward']:>8.2f}%"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": platform.machine(), "episode": f"{N_WAY}-way {K_SHOT}-shot {N_QUERY}-query, rotation M=4"}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
