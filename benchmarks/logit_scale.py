"""How far a meta-trained model's logit scale is from the best one: the case for ``--scale-init``
(docs/how-to/meta-training.md).

    python benchmarks/logit_scale.py CHECKPOINT [CHECKPOINT ...] [--data-root DIR] [--episodes 20]
        [--seed 3] [--out JSON]

For each ``fewshot-sla meta-train`` checkpoint (a ``.pt`` file or a run directory), on the same
``--episodes`` validation episodes of its config (``eval_way``-way ``eval_shot``-shot, 5 queries per
class, sampler seed ``--seed``): the head's logits of the reported inference at scale 1 (the
model's learnt scale divided out), their standard deviation, and the mean cross-entropy of those
logits times each scale of a grid (0.5 to 128, doubling), next to the cross-entropy at the learnt
scale. A learnt scale far below the best one means the logits are too flat for the loss: the case
of a ridge head under Adam started at MetaOptNet's 1.0. Prints a table and writes JSON (default
``runs/benchmarks/logit_scale.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from fewshot_sla.data.spec import ImageSpec
from fewshot_sla.engine import load_model
from fewshot_sla.episodes import EpisodeSampler
from fewshot_sla.inferences import reported
from fewshot_sla.meta.batches import load_batch, load_split
from fewshot_sla.meta.methods import run_episodes

GRID = tuple(0.5 * 2**i for i in range(9))  # 0.5 .. 128


def probe(path: str, data_root: str | None, episodes: int, seed: int) -> dict:
    """Learnt scale, logit std and cross-entropy per scale of one checkpoint (see the module docs)."""
    device = torch.device("cpu")
    loaded = load_model(path, device)
    model, cfg, ckpt = loaded.model, loaded.config, loaded.checkpoint
    inference = reported("meta", cfg.mode)
    scale = model.distill_scale if inference == "distilled" else model.scale  # the one that multiplies these logits
    learnt = float(scale.detach())
    scale.data.fill_(1.0)
    ds = load_split(cfg.dataset, data_root or cfg.data_root, "val", cfg.image_size, options=cfg.dataset_options)
    pre = ImageSpec.from_checkpoint(ckpt["data"]).normalise
    sampler = EpisodeSampler(ds.labels, cfg.eval_way, cfg.eval_shot, 5, episodes, seed=seed,
                             class_names=list(ds.class_names))
    model.eval()
    with torch.no_grad():
        batch = load_batch(ds, sampler, list(range(episodes)), device, pre)
        out = run_episodes(model, batch, loss=None, inferences=[inference])
    logits, labels = out.logits[inference].reshape(-1, cfg.eval_way), out.labels.reshape(-1)
    ce = {s: float(F.cross_entropy(s * logits, labels)) for s in GRID}
    best = min(ce, key=ce.get)
    return {"checkpoint": str(path), "head": cfg.head, "mode": cfg.mode, "inference": inference,
            "step": ckpt.get("step"), "learnt_scale": learnt, "logit_std": float(logits.std()),
            "ce_at_learnt": float(F.cross_entropy(learnt * logits, labels)), "ce_by_scale": ce,
            "best_grid_scale": best, "episodes": episodes, "seed": seed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", help="meta-train checkpoints (.pt files or run directories)")
    ap.add_argument("--data-root", default=None, help="the dataset's folder (default: each checkpoint's)")
    ap.add_argument("--episodes", type=int, default=20, help="validation episodes (default: 20)")
    ap.add_argument("--seed", type=int, default=3, help="episode sampler seed (default: 3)")
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks/logit_scale.json"), help="write JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    missing = [c for c in args.checkpoints if not Path(c).exists()]
    if missing:
        ap.exit(2, f"logit_scale.py: error: {', '.join(missing)} not found; pass meta-train checkpoints "
                   "(best.pt, last.pt or their run directory)\n")
    rows = [probe(c, args.data_root, args.episodes, args.seed) for c in args.checkpoints]
    print("| checkpoint | head | step | learnt scale | logit std | CE at learnt | best grid scale | CE there |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['checkpoint']} | {r['head']} | {r['step']} | {r['learnt_scale']:.2f} | {r['logit_std']:.3f} | "
              f"{r['ce_at_learnt']:.3f} | {r['best_grid_scale']:g} | {r['ce_by_scale'][r['best_grid_scale']]:.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "logit_scale", "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
