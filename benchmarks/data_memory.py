"""Resident memory per process for a tiered-ImageNet-sized split: decoded in memory vs memory-mapped
from the on-disk cache (``fewshot_sla.data.cache``), one process and two torchrun ranks.

A synthetic ``train_images.npz`` + ``train_labels.pkl`` in MetaOptNet's tieredImageNet format
(``--images`` RGB images at 84 px, 351 classes) is written to a temporary folder and read with the
real loader: ``get_dataset("tiered-imagenet", ...)`` without a cache (decoded into memory, the old
path) and with ``cache_dir`` + ``mmap=True`` (the entry is built once beforehand, untimed). Every
process then draws 200 5-way 5-shot 15-query episodes and finally reads every image once (an
epoch), and reports, from /proc/self/status and /proc/self/smaps_rollup: peak resident memory
(VmHWM), resident memory split into private anonymous pages (RssAnon) and file pages (RssFile,
shared page cache), and the proportional set size (Pss: shared pages divided among the processes
mapping them, so the ranks' Pss add up to what the node spends). Under torchrun the ranks pass a
barrier before each reading, so both hold their copy at once. A second table times loading and
collating episodes, in memory vs memory-mapped (warm page cache), for an Omniglot-sized array and
the large one: the rule ``mmap=None`` follows (``MMAP_AUTO_MIB``).

    PYTHONPATH=$PWD python benchmarks/data_memory.py [--images 100000] [--out benchmarks/results/data_memory.json]

Default output: runs/benchmarks/data_memory.json. The temporary data (about 2 x 2.1 GB for 100k
images) is deleted at the end (``--keep`` keeps it); ``--workdir`` chooses where it goes.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SIZE, CLASSES = 84, 351
N_WAY, K_SHOT, N_QUERY, EPISODES = 5, 5, 15, 200


def memory() -> dict:
    """This process's VmHWM, VmRSS, RssAnon, RssFile (status) and Pss (smaps_rollup), in MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(rest.split()[0]) / 1024
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("Pss", "Pss_Anon", "Pss_File"):
                out[key] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return out


def write_split(root: Path, n: int) -> float:
    """Synthetic tieredImageNet ``train`` split of ``n`` images in MetaOptNet's files; returns MiB."""
    root.mkdir(parents=True, exist_ok=True)
    images = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    pattern = (np.arange(SIZE * SIZE * 3, dtype=np.int64) % 251).astype(np.uint8).reshape(SIZE, SIZE, 3)
    for s in range(0, n, 4096):  # distinct content per image, cheap to make
        e = min(n, s + 4096)
        images[s:e] = pattern[None] + (np.arange(s, e) % 256).astype(np.uint8)[:, None, None, None]
    np.savez(root / "train_images.npz", images=images)
    labels = np.arange(n) % min(CLASSES, max(N_WAY, n // 40))  # >= 40 images per class
    with open(root / "train_labels.pkl", "wb") as f:
        pickle.dump({"labels": labels.tolist()}, f, protocol=4)
    return images.nbytes / 2**20


def child(args: argparse.Namespace) -> None:
    """One measured process (a torchrun rank when WORLD_SIZE > 1): prints a JSON line."""
    from fewshot_sla.data import get_dataset
    from fewshot_sla.episodes import EpisodeSampler, collate_episodes

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")
    else:
        dist = None

    def barrier():
        if dist is not None:
            dist.barrier()

    mapped = args.child == "mmap"
    base = memory()
    t0 = time.perf_counter()
    if args.child == "build":
        get_dataset("tiered-imagenet", args.data, "train", cache_dir=args.cache, mmap=True)
        print(json.dumps({"build_s": time.perf_counter() - t0}))
        return
    ds = get_dataset("tiered-imagenet", args.data, "train", cache_dir=args.cache if mapped else None,
                     mmap=True if mapped else None)
    load_s = time.perf_counter() - t0
    barrier()
    after_load = memory()
    sampler = EpisodeSampler(ds.labels, N_WAY, K_SHOT, N_QUERY, n_episodes=EPISODES, seed=rank)
    t0 = time.perf_counter()
    checksum = 0
    for i in range(EPISODES):
        b = collate_episodes(ds.images, [sampler.episode(i)], N_WAY, K_SHOT, N_QUERY)
        checksum += int(b.support[0, 0, 0, 0, 0])
    episode_ms = 1e3 * (time.perf_counter() - t0) / EPISODES
    barrier()
    after_episodes = memory()
    t0 = time.perf_counter()
    for s in range(0, len(ds), 4096):
        checksum += int(ds.images[s : s + 4096, :, 0, 0].sum())
    epoch_s = time.perf_counter() - t0
    barrier()
    after_epoch = memory()
    print(json.dumps({"mode": args.child, "rank": rank, "world": world, "images": len(ds),
                      "dataset_mib": ds.nbytes / 2**20, "load_s": load_s, "episode_ms": episode_ms, "epoch_s": epoch_s,
                      "start": base, "after_load": after_load, "after_episodes": after_episodes,
                      "after_epoch": after_epoch, "checksum": checksum}))
    if dist is not None:
        dist.destroy_process_group()


def run_children(mode: str, ranks: int, data: Path, cache: Path) -> list[dict]:
    """Run ``mode`` in one process or under torchrun with ``ranks`` ranks; their JSON lines."""
    script = [str(Path(__file__).resolve()), "--child", mode, "--data", str(data), "--cache", str(cache)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if ranks == 1:
        cmd = [sys.executable, *script]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", *script]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"{mode} x{ranks} failed:\n{res.stderr[-3000:]}")
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    return sorted(rows, key=lambda r: r.get("rank", 0))


def speed(n: int, channels: int, size: int, folder: Path, reps: int = 300) -> dict:
    """Load and per-episode collate time for an array of ``n`` images, in memory vs memory-mapped."""
    from fewshot_sla.episodes import EpisodeSampler, collate_episodes

    path = folder / f"speed-{n}-{channels}-{size}.npy"
    arr = np.random.default_rng(0).integers(0, 256, (n, channels, size, size), dtype=np.uint8)
    np.save(path, arr)
    del arr
    labels = np.arange(n) % max(N_WAY, n // 20)
    sampler = EpisodeSampler(labels, N_WAY, K_SHOT, N_QUERY, n_episodes=reps, seed=0)
    episodes = [sampler.episode(i) for i in range(reps)]
    out = {"images": n, "shape": [channels, size, size], "mib": n * channels * size * size / 2**20}
    for mode in ("memory", "mmap"):
        t0 = time.perf_counter()
        images = torch.from_numpy(np.load(path, mmap_mode="c" if mode == "mmap" else None))
        load = time.perf_counter() - t0
        for e in episodes[:20]:  # warm-up
            collate_episodes(images, [e], N_WAY, K_SHOT, N_QUERY)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for e in episodes:
                collate_episodes(images, [e], N_WAY, K_SHOT, N_QUERY)
            best = min(best, (time.perf_counter() - t0) / reps)
        out[f"{mode}_load_s"], out[f"{mode}_episode_ms"] = load, 1e3 * best
        del images
    path.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100_000, help="images in the synthetic split (84 px RGB)")
    ap.add_argument("--ranks", type=int, default=2, help="torchrun ranks of the multi-process rows")
    ap.add_argument("--workdir", default=None, help="where the temporary data goes (default: the system's temp)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data")
    ap.add_argument("--out", default="runs/benchmarks/data_memory.json")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    work = Path(tempfile.mkdtemp(prefix="fewshot-data-memory-", dir=args.workdir))
    try:
        data, cache = work / "tiered", work / "cache"
        t0 = time.perf_counter()
        mib = write_split(data, args.images)
        print(f"synthetic tiered-ImageNet train split: {args.images} images, {mib:.0f} MiB uint8 "
              f"(written in {time.perf_counter() - t0:.0f} s) under {work}")
        build = run_children("build", 1, data, cache)[0]
        print(f"cache entry built in {build['build_s']:.1f} s (one decode, not part of the rows below)")
        rows = []
        for mode in ("memory", "mmap"):
            for ranks in (1, args.ranks):
                rows.extend(dict(r, ranks=ranks) for r in run_children(mode, ranks, data, cache))
        shutil.rmtree(data)  # the speed rows need the disk space less than this
        speeds = [speed(19280, 1, 28, work), speed(min(args.images, 40_000), 3, SIZE, work)]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\ntorch={torch.__version__} python={platform.python_version()} dataset {mib:.0f} MiB; MiB per process "
          f"(Pss: shared pages divided among the processes mapping them)")
    head = (f"{'path':>7} {'ranks':>5} {'rank':>4} {'load s':>7} {'ep ms':>6} {'VmHWM':>7} {'RssAnon':>8} "
            f"{'RssFile':>8} {'Pss':>7} {'RssAnon*':>9} {'RssFile*':>9} {'Pss*':>7}")
    print(head + "\n" + " " * 42 + "(after 200 episodes)" + " " * 12 + "(* after one epoch)")
    for r in rows:
        a, e = r["after_episodes"], r["after_epoch"]
        print(f"{r['mode']:>7} {r['ranks']:>5} {r['rank']:>4} {r['load_s']:>7.1f} {r['episode_ms']:>6.2f} "
              f"{e['VmHWM']:>7.0f} {a['RssAnon']:>8.0f} {a['RssFile']:>8.0f} {a.get('Pss', 0):>7.0f} "
              f"{e['RssAnon']:>9.0f} {e['RssFile']:>9.0f} {e.get('Pss', 0):>7.0f}")
    print(f"\n{'images':>7} {'MiB':>7} {'load mem s':>11} {'load mmap s':>12} {'ep mem ms':>10} {'ep mmap ms':>11}")
    for s in speeds:
        print(f"{s['images']:>7} {s['mib']:>7.0f} {s['memory_load_s']:>11.3f} {s['mmap_load_s']:>12.4f} "
              f"{s['memory_episode_ms']:>10.3f} {s['mmap_episode_ms']:>11.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "images": args.images, "dataset_mib": mib, "episode": f"{N_WAY}-way {K_SHOT}-shot {N_QUERY}-query",
            "episodes_per_process": EPISODES, "cache_build_s": build["build_s"]}
    out.write_text(json.dumps({"meta": meta, "rows": rows, "speed": speeds}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
