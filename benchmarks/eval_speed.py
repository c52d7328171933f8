"""Episode evaluation speed: per-episode features vs the feature cache, beside the lower bound.

Cases (random-init models: speed does not depend on the weights):

- ``omniglot``: 20-way 1-shot 15-query episodes, Conv-4 at 28 px, ProtoNet + SLA (rotation, M = 4,
  inferences single and aggregated) on Omniglot's test split (the main config's 5 held-out
  background alphabets; ``--data-root``, synthetic 28 px grey images of the same count when absent).
- ``resnet12``: 5-way 5-shot 15-query episodes, ResNet-12 (16,000-d features, no pooling) at 84 px,
  ProtoNet (M = 1) on synthetic RGB images (20 classes x 600 images, mini-ImageNet's test split).

For each: the per-episode path (``evaluate_episodes --features per-episode``'s loop, every episode's
images through the backbone) on ``--uncached-episodes`` episodes, the cached path
(:func:`~fewshot_sla.meta.feature_cache.cached_episode_accuracies`) on ``--episodes``, and the lower
bound: the backbone alone over the split's images once per view (inputs prepared outside the timer,
measured after the cached run). Times are extrapolated linearly to ``--episodes`` where fewer were
run (marked ``*``); the cached time splits into the cache fill (preprocessing, views, backbone), the
episode solves and the rest (sampling, planning). The per-episode accuracies of the episodes both
paths ran are compared, and every query whose predicted class differs is counted (with its top-2
logit gap in the per-episode path: a flip from a near-tie is a last-bit difference of batched
convolutions).

    OMP_NUM_THREADS=1 python benchmarks/eval_speed.py [--device cpu|cuda] [--episodes 1000]
        [--uncached-episodes 1000] [--cases omniglot,resnet12] [--resnet-classes 20]
        [--resnet-per-class 600] [--data-root ../shared/data/omniglot] [--out FILE]

Default output: runs/benchmarks/eval_speed.json (``--out benchmarks/results/eval_speed_cpu.json`` to commit).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fewshot_sla.backbones import get_backbone
from fewshot_sla.data.base import channel_stats
from fewshot_sla.data.spec import ImageSpec
from fewshot_sla.episodes import EpisodeSampler
from fewshot_sla.heads import get_head
from fewshot_sla.meta.batches import load_batch
from fewshot_sla.meta.feature_cache import CacheSettings, CacheStats, cached_episode_accuracies
from fewshot_sla.meta.methods import episode_accuracy, run_episodes
from fewshot_sla.meta.model import FewShotModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synthetic import synthetic_dataset  # noqa: E402

TASKS_PER_BATCH = 8  # eval's default


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def omniglot_split(root: str, image_size: int = 28):
    """(dataset, source) of the omniglot case."""
    from fewshot_sla.data import get_dataset

    try:
        ds = get_dataset("omniglot", root, "test", image_size=image_size, val_alphabets=5, test_alphabets=5)
        return ds, f"omniglot test split ({root}, 5 held-out background alphabets)"
    except Exception as e:  # noqa: BLE001 - absent data: the synthetic stand-in, said in the output
        print(f"omniglot not loaded ({str(e).splitlines()[0]}); synthetic 28 px grey images instead")
        return synthetic_dataset(136, 20, image_size, 1, seed=0), "synthetic (136 classes x 20, 28 px grey)"


def default_root() -> str:
    here = Path(__file__).resolve().parents[1]
    env = os.environ.get("FEWSHOT_SLA_DATA")
    for d in ([Path(env)] if env else []) + [here.parent / "shared" / "data", here.parents[1] / "shared" / "data"]:
        if (d / "omniglot").is_dir():
            return str(d / "omniglot")
    return "data/omniglot"


def lower_bound(model: FewShotModel, ds, pre, views: int, device: torch.device, chunk_rows: int = 512) -> float:
    """Seconds of the backbone alone over every image of ``ds`` once per view (chunks of ``chunk_rows``)."""
    per = max(1, chunk_rows // views)
    total = 0.0
    with torch.no_grad():
        model.backbone(pre(ds.images[:2].to(device), generator=None))  # warm-up
        for idx in torch.arange(ds.labels.shape[0]).split(per):
            x = pre(ds.images.index_select(0, idx).to(device), generator=None)
            x = model.transforms(x) if views > 1 else x
            if model.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            sync(device)
            t0 = time.perf_counter()
            model.backbone(x)
            sync(device)
            total += time.perf_counter() - t0
    return total


def per_episode(model, ds, pre, sampler, n: int, names, device):
    """The per-episode path on episodes ``0..n-1``: (seconds, accuracies, predictions, top-2 gaps)."""
    accs = {k: [] for k in names}
    preds = {k: [] for k in names}
    gaps = {k: [] for k in names}
    sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        for start in range(0, n, TASKS_PER_BATCH):
            idx = list(range(start, min(n, start + TASKS_PER_BATCH)))
            out = run_episodes(model, load_batch(ds, sampler, idx, device, pre), inferences=names)
            for k in names:
                accs[k].append(episode_accuracy(out.logits[k], out.labels).double().cpu().numpy())
                top = out.logits[k].topk(2, dim=-1).values
                preds[k].append(out.logits[k].argmax(-1).cpu())
                gaps[k].append((top[..., 0] - top[..., 1]).cpu())
    sync(device)
    secs = time.perf_counter() - t0
    return secs, {k: np.concatenate(v) for k, v in accs.items()}, preds, gaps


def run_case(name: str, model: FewShotModel, ds, pre, shape: tuple[int, int, int], episodes: int, uncached: int,
             device: torch.device, source: str) -> dict:
    n_way, k_shot, n_query = shape
    model.eval()
    names = tuple(model.inferences)
    views = model.M if model.mode in ("sla", "sla+sd") else 1
    sampler = EpisodeSampler(ds.labels, n_way, k_shot, n_query, max(episodes, uncached), seed=0)
    print(f"[{name}] {source}: {len(ds.labels)} images, {len(ds.class_names)} classes, {views} view(s); "
          f"{n_way}-way {k_shot}-shot {n_query}-query", flush=True)
    stats, cpreds = CacheStats(), {}
    sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        cacc = cached_episode_accuracies(model, ds, pre, sampler, list(range(episodes)), names, device,
                                         TASKS_PER_BATCH, CacheSettings(), stats, predictions=cpreds)
    sync(device)
    t_cached = time.perf_counter() - t0
    print(f"[{name}] cached, {episodes} episodes: {t_cached:.2f} s (fill {stats.embed_seconds:.2f}, "
          f"solve {stats.solve_seconds:.2f})", flush=True)
    t_low = lower_bound(model, ds, pre, views, device)
    print(f"[{name}] lower bound (backbone, one pass per image and view): {t_low:.2f} s", flush=True)
    t_u, uacc, upreds, gaps = per_episode(model, ds, pre, sampler, uncached, names, device)
    print(f"[{name}] per episode, {uncached} episodes: {t_u:.2f} s", flush=True)
    m = min(episodes, uncached)
    compare = {}
    for k in names:
        up = torch.cat([p.flatten(1) for p in upreds[k]])[:m]
        cp = torch.cat([p.flatten(1) for p in cpreds[k]])[:m]
        gap = torch.cat([g.flatten(1) for g in gaps[k]])[:m]
        flip = up != cp
        compare[k] = {"episodes": m, "queries": int(up.numel()),
                      "accuracy_equal_episodes": int((uacc[k][:m] == cacc[k][:m]).sum()),
                      "prediction_flips": int(flip.sum()), "flip_top2_gaps": [float(g) for g in gap[flip]],
                      "mean_accuracy_per_episode": float(uacc[k][:m].mean()),
                      "mean_accuracy_cached": float(cacc[k][:m].mean())}
    per_ep_uncached = t_u / uncached
    full_uncached = per_ep_uncached * episodes
    rest = t_cached - stats.embed_seconds - stats.solve_seconds
    return {
        "case": name, "source": source, "images": int(len(ds.labels)), "classes": len(ds.class_names),
        "views": views, "n_way": n_way, "k_shot": k_shot, "n_query": n_query, "episodes": episodes,
        "uncached_episodes_run": uncached, "uncached_extrapolated": uncached < episodes,
        "backbone_image_passes": {"per_episode": episodes * n_way * (k_shot + n_query) * views,
                                  "cached": stats.image_views, "lower_bound": int(len(ds.labels)) * views},
        "seconds": {"per_episode": round(full_uncached, 3), "cached": round(t_cached, 3),
                    "lower_bound": round(t_low, 3), "cache_fill": round(stats.embed_seconds, 3),
                    "solve": round(stats.solve_seconds, 3), "rest": round(rest, 3),
                    "per_episode_measured": round(t_u, 3)},
        "speedup": round(full_uncached / t_cached, 2), "cached_over_lower_bound": round(t_cached / t_low, 3),
        "compare": compare,
    }


def extrapolate_split(r: dict, images: int, episodes: int) -> dict:
    """The ResNet-12 case at ``images`` images: fill and lower bound scale with images, solves with episodes."""
    f = images / r["images"]
    s = r["seconds"]
    cached = s["cache_fill"] * f + s["solve"] * episodes / r["episodes"] + s["rest"] * episodes / r["episodes"]
    per_episode = s["per_episode"] * episodes / r["episodes"]
    return {"images": images, "episodes": episodes, "per_episode": round(per_episode, 1), "cached": round(cached, 1),
            "lower_bound": round(s["lower_bound"] * f, 1), "speedup": round(per_episode / cached, 2),
            "cached_over_lower_bound": round(cached / (s["lower_bound"] * f), 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--uncached-episodes", type=int, default=None, help="default: --episodes")
    ap.add_argument("--cases", default="omniglot,resnet12")
    ap.add_argument("--resnet-episodes", type=int, default=None, help="default: --episodes")
    ap.add_argument("--resnet-uncached-episodes", type=int, default=None, help="default: --uncached-episodes")
    ap.add_argument("--resnet-classes", type=int, default=20)
    ap.add_argument("--resnet-per-class", type=int, default=600)
    ap.add_argument("--data-root", default=None, help="Omniglot's folder (default: $FEWSHOT_SLA_DATA/omniglot or "
                    "../shared/data/omniglot beside the checkout or its parent)")
    ap.add_argument("--note", default="", help="free text stored in the JSON (e.g. the machine's load)")
    ap.add_argument("--out", default="runs/benchmarks/eval_speed.json")
    a = ap.parse_args()
    device = torch.device(a.device)
    uncached = a.uncached_episodes or a.episodes
    results = []
    cases = a.cases.split(",")
    if "omniglot" in cases:
        ds, source = omniglot_split(a.data_root or default_root())
        mean, std = channel_stats(ds.images)
        torch.manual_seed(0)
        model = FewShotModel(get_backbone("conv4", 1, image_size=28), get_head("protonet"), "sla", "rotation")
        model.to(device)
        results.append(run_case("omniglot", model, ds, ImageSpec(1, 28, mean, std).normalise, (20, 1, 15),
                                a.episodes, uncached, device, source))
    if "resnet12" in cases:
        ds = synthetic_dataset(a.resnet_classes, a.resnet_per_class, 84, 3, seed=1)
        torch.manual_seed(0)
        model = FewShotModel(get_backbone("resnet12", 3, image_size=84), get_head("protonet"), "baseline")
        model.to(device)
        ep = a.resnet_episodes or a.episodes
        r = run_case("resnet12", model, ds, ImageSpec(3, 84, (0.5,) * 3, (0.25,) * 3).normalise, (5, 5, 15),
                     ep, a.resnet_uncached_episodes or uncached, device,
                     f"synthetic ({a.resnet_classes} classes x {a.resnet_per_class}, 84 px RGB)")
        if r["images"] != 12000 or ep != 1000:
            r["extrapolated_to_12000_images_1000_episodes"] = extrapolate_split(r, 12000, 1000)
        results.append(r)
    print(f"\n{'case':<10} {'episodes':>8} {'per episode s':>14} {'cached s':>9} {'lower bound s':>14} "
          f"{'speedup':>8} {'cached/LB':>9} {'fill s':>7} {'solve s':>8} {'rest s':>7}")
    for r in results:
        s = r["seconds"]
        star = "*" if r["uncached_extrapolated"] else ""
        print(f"{r['case']:<10} {r['episodes']:>8} {s['per_episode']:>13.1f}{star:1} {s['cached']:>9.2f} "
              f"{s['lower_bound']:>14.2f} {r['speedup']:>8.1f} {r['cached_over_lower_bound']:>9.2f} "
              f"{s['cache_fill']:>7.2f} {s['solve']:>8.2f} {s['rest']:>7.2f}")
        x = r.get("extrapolated_to_12000_images_1000_episodes")
        if x:
            print(f"{'  -> 12000 images, 1000 episodes (extrapolated)':<47} per episode {x['per_episode']:.0f} s, "
                  f"cached {x['cached']:.0f} s, lower bound {x['lower_bound']:.0f} s, speedup {x['speedup']:.1f}")
        for k, c in r["compare"].items():
            print(f"  {k}: {c['accuracy_equal_episodes']}/{c['episodes']} episodes with equal accuracy, "
                  f"{c['prediction_flips']} prediction flips in {c['queries']} queries")
    print("* per-episode time extrapolated linearly from --uncached-episodes")
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "platform": platform.platform(), "processor": platform.processor(), "note": a.note,
            "command": " ".join(sys.argv), "results": results}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
