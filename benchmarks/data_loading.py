"""Data loading benchmark: load time and resident memory of Omniglot background and CIFAR-10
(decoded from the zips in ../shared/data, then read back from the uint8 cache), and episodes
per second drawn from them (5-way 1-shot 15-query, SLA rotation set) with batched
augmentation versus a per-image loop.

    python benchmarks/data_loading.py [--data-dir ../shared/data] [--episodes 300]

Each load runs in a fresh subprocess so that its resident-memory numbers are its own. The
cache goes to a temporary folder outside the repository unless --cache-dir is given.
Prints a table and writes runs/benchmarks/data_loading.json (the committed
benchmarks/results/data_loading.json changes only with ``--out benchmarks/results/data_loading.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the tests' real-data folder: $FEWSHOT_SLA_DATA (relative to the repository root), else ../shared/data
DEFAULT_DATA = (REPO / os.environ.get("FEWSHOT_SLA_DATA", "../shared/data")).resolve()
DATASETS = {  # name -> (get_dataset name, splits)
    "omniglot-background": ("omniglot", ["background"]),
    "cifar10": ("cifar10", ["train", "test"]),
}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(key: str, data_dir: str, cache_dir: str | None) -> dict:
    """Load one dataset (all its splits) in this process and report time and memory."""
    import torch  # noqa: F401 - imported before measuring, as a training run would

    from fewshot_sla.data import get_dataset

    name, splits = DATASETS[key]
    rss0 = _rss_mib()
    t0 = time.perf_counter()
    sets = [get_dataset(name, data_dir, s, cache_dir=cache_dir) for s in splits]
    seconds = time.perf_counter() - t0
    rss1 = _rss_mib()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = sum(len(d) for d in sets)
    nbytes = sum(d.nbytes for d in sets)
    return {
        "seconds": seconds,
        "images": n,
        "images_per_s": n / seconds,
        "uint8_mib": nbytes / 2**20,
        "float32_mib": 4 * nbytes / 2**20,
        "rss_before_mib": rss0,
        "rss_after_mib": rss1,
        "rss_growth_mib": rss1 - rss0,
        "peak_rss_mib": peak,
    }


def run_child(key: str, data_dir: Path, cache_dir: Path | None) -> dict:
    cmd = [sys.executable, __file__, "--child", key, "--data-dir", str(data_dir)]
    if cache_dir is not None:
        cmd += ["--cache-dir", str(cache_dir)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def episodes_per_second(key: str, data_dir: Path, cache_dir: Path, n_episodes: int) -> dict:
    import torch

    from fewshot_sla.data import AugmentConfig, BatchAugment, get_augmentation, get_dataset
    from fewshot_sla.episodes import EpisodeSampler
    from fewshot_sla.transforms import get_transform_set

    name, splits = DATASETS[key]
    ds = get_dataset(name, data_dir, splits[0], cache_dir=cache_dir)
    if name == "omniglot":  # random shifts only: flips and colour do not suit characters
        aug = BatchAugment(AugmentConfig(crop=28, padding=4, mean=ds.mean, std=ds.std))
        recipe = "crop 28 pad 4 + normalise"
    else:
        aug = get_augmentation("cifar-fs", "metaoptnet")
        recipe = "MetaOptNet CIFAR-FS: crop 32 pad 4, jitter 0.4, flip, normalise"
    rot = get_transform_set("rotation")
    sampler = EpisodeSampler(ds.labels, 5, 1, 15, n_episodes, seed=0, class_names=ds.class_names)
    gen = torch.Generator().manual_seed(0)

    def batched(idx):
        x, _ = ds.get_batch(idx)
        return rot(aug(x, gen))

    def looped(idx):  # the per-image baseline: one augmentation call per image
        x, _ = ds.get_batch(idx)
        return rot(torch.cat([aug(x[i : i + 1], gen) for i in range(len(x))]))

    from fewshot_sla.data.base import channel_stats

    mean, std = channel_stats(ds.images, max_images=len(ds))  # source of DATASET_INFO's numbers
    out = {"recipe": recipe, "episode_rows": None, "channel_mean": mean, "channel_std": std}
    for label, fn in (("batched", batched), ("per_image_loop", looped)):
        fn(sampler.episode(0))  # warm-up
        count = n_episodes if label == "batched" else max(20, n_episodes // 5)
        t0 = time.perf_counter()
        for i in range(count):
            y = fn(sampler.episode(i))
        dt = time.perf_counter() - t0
        out[f"{label}_episodes_per_s"] = count / dt
        out["episode_rows"] = list(y.shape)
    t0 = time.perf_counter()
    for i in range(n_episodes):
        sampler.episode(i)
    out["sampling_only_episodes_per_s"] = n_episodes / (time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="where the uint8 .npz caches go (default: a temporary folder)")
    ap.add_argument("--episodes", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads for the episode pipeline (default 1: a data worker)")
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks/data_loading.json"),
                    help="JSON output path (default: runs/benchmarks/data_loading.json)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, str(args.data_dir), args.cache_dir and str(args.cache_dir))))
        return
    if not args.data_dir.is_dir():
        sys.exit(f"data folder {args.data_dir} not found; pass --data-dir")

    import torch

    torch.set_num_threads(args.threads)
    tmp = None
    cache_dir = args.cache_dir
    if cache_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="fewshot-sla-cache-")
        cache_dir = Path(tmp.name)
    results = {}
    try:
        for key in DATASETS:
            r = {
                "decode_no_cache": run_child(key, args.data_dir, None),
                "decode_and_write_cache": run_child(key, args.data_dir, cache_dir),
                "read_cache": run_child(key, args.data_dir, cache_dir),
            }
            r["episodes"] = episodes_per_second(key, args.data_dir, cache_dir, args.episodes)
            results[key] = r
    finally:
        if tmp is not None:
            tmp.cleanup()

    print(f"\n{'dataset':<21}{'load':<23}{'images':>8}{'seconds':>9}{'img/s':>9}"
          f"{'uint8 MiB':>10}{'f32 MiB':>9}{'RSS +MiB':>9}{'peak MiB':>9}")
    for key, r in results.items():
        for mode in ("decode_no_cache", "decode_and_write_cache", "read_cache"):
            m = r[mode]
            print(f"{key:<21}{mode:<23}{m['images']:>8}{m['seconds']:>9.2f}{m['images_per_s']:>9.0f}"
                  f"{m['uint8_mib']:>10.1f}{m['float32_mib']:>9.1f}{m['rss_growth_mib']:>9.1f}"
                  f"{m['peak_rss_mib']:>9.1f}")
    print(f"\n{'dataset':<21}{'episodes/s batched':>19}{'per-image loop':>16}{'sampling only':>15}"
          "  output rows / augmentation")
    for key, r in results.items():
        e = r["episodes"]
        print(f"{key:<21}{e['batched_episodes_per_s']:>19.1f}{e['per_image_loop_episodes_per_s']:>16.1f}"
              f"{e['sampling_only_episodes_per_s']:>15.0f}  {e['episode_rows']} / {e['recipe']}")
    for key, r in results.items():
        e = r["episodes"]
        print(f"{key}: channel mean {e['channel_mean']}, std {e['channel_std']} ([0, 1] scale)")
    payload = {
        "benchmark": "data_loading",
        "episode": "5-way 1-shot 15-query, transform set 'rotation' (M=4)",
        "episodes": args.episodes,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average": os.getloadavg(),
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
