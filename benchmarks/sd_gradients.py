"""Where SLA+SD's three loss terms push the backbone: gradient norms and cosines per term.

    python benchmarks/sd_gradients.py RUN [RUN ...] [--init] [--batches 8] [--out JSON]

For each ``fewshot-sla supervised --mode sla+sd`` run (its ``last.pt``; ``--init``: also the
untrained model of the first run's config, same seed), on the same ``--batches`` training batches
(the run's own augmentation and transforms, in ``train`` mode as a training step sees them):
the gradients of ``L_SLA``, ``CE(u, y)`` (unweighted) and ``T^2 KL`` with respect to the backbone's
parameters, their norms, and the cosine of each extra term's gradient (and of
``beta * CE + T^2 KL``, what the run adds) with ``L_SLA``'s (negative: the term undoes what the
joint head asks of the features; near 0 with a comparable norm: it adds noise to the step). Averages over the batches;
prints a table and writes JSON (default ``runs/benchmarks/sd_gradients.json``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from fewshot_sla.engine import read_checkpoint
from fewshot_sla.seeding import seeded_generator
from fewshot_sla.supervised import SupervisedConfig
from fewshot_sla.supervised.data import load_data
from fewshot_sla.supervised.losses import supervised_loss
from fewshot_sla.supervised.train import SupervisedTrainer

TERMS = ("joint", "ce", "distill")


def term_gradients(trainer: SupervisedTrainer, it: int) -> dict[str, torch.Tensor]:
    """Flat backbone gradient of each loss term on iteration ``it``'s batch (``ce`` unweighted)."""
    cfg, model = trainer.cfg, trainer.model
    idx = trainer.plan.global_batch(it)
    x = trainer.train_aug(trainer.train_images[idx], generator=seeded_generator(cfg.seed, 99, it))
    out = model(trainer.tset(x))
    parts = supervised_loss("sla+sd", out, trainer.train_labels[idx], trainer.M,
                            temperature=cfg.sd_temperature, sd_beta=cfg.sd_beta)
    params = [p for p in model.backbone.parameters() if p.requires_grad]
    grads = {}
    for k in TERMS:
        g = torch.autograd.grad(parts[k], params, retain_graph=True, allow_unused=True)
        grads[k] = torch.cat([(gi if gi is not None else torch.zeros_like(p)).flatten() for gi, p in zip(g, params)])
    return grads


def measure(trainer: SupervisedTrainer, batches: int) -> dict[str, float]:
    trainer.model.train()
    beta = trainer.cfg.sd_beta
    sums: dict[str, float] = {}
    for it in range(batches):
        g = term_gradients(trainer, it)
        row = {f"norm_{k}": float(g[k].norm()) for k in TERMS}
        for k in ("ce", "distill"):
            row[f"cos_joint_{k}"] = float(torch.nn.functional.cosine_similarity(g["joint"], g[k], dim=0))
        row["norm_total"] = float((g["joint"] + beta * g["ce"] + g["distill"]).norm())
        row["cos_joint_extra"] = float(torch.nn.functional.cosine_similarity(g["joint"], beta * g["ce"] + g["distill"],
                                                                         dim=0))
        for k, v in row.items():
            sums[k] = sums.get(k, 0.0) + v / batches
    return sums


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="sla+sd run directories (their last.pt)")
    ap.add_argument("--init", action="store_true", help="also the untrained model (the first run's config)")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--data-root", default="", help="dataset folder (default: the run's)")
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks/sd_gradients.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    rows, data = [], None
    scratch = tempfile.TemporaryDirectory()  # the trainer claims a run directory; nothing is kept
    for i, run in enumerate(args.runs):
        if not (run / "last.pt").is_file():
            ap.exit(2, f"sd_gradients.py: error: {run} holds no last.pt; pass run directories of "
                       "fewshot-sla supervised\n")
        state = read_checkpoint(run / "last.pt", map_location="cpu")
        over = {"run_dir": f"{scratch.name}/{i}", "quiet": True, "device": "cpu", "plot": False, "num_threads": 0}
        if args.data_root:
            over["data_root"] = args.data_root
        cfg = SupervisedConfig(**{**state["config"], **over})
        if cfg.mode != "sla+sd":
            ap.exit(2, f"sd_gradients.py: error: {run} is a --mode {cfg.mode} run; pass sla+sd runs\n")
        data = data or load_data(cfg)
        trainer = SupervisedTrainer(cfg, data)
        if i == 0 and args.init:
            rows.append({"run": "init", "iteration": 0, **measure(trainer, args.batches)})
        trainer.model.load_state_dict(state["model"])
        rows.append({"run": run.name, "iteration": state["iteration"], "sd_beta": cfg.sd_beta,
                     "sd_temperature": cfg.sd_temperature, **measure(trainer, args.batches)})
    print("| run | iteration | |g_SLA| | |g_CE| | |g_KL| | |g_total| | cos(SLA, CE) | cos(SLA, KL) "
          "| cos(SLA, beta CE + KL) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['run']} | {r['iteration']} | {r['norm_joint']:.3f} | {r['norm_ce']:.3f} | {r['norm_distill']:.3f} "
              f"| {r['norm_total']:.3f} "
              f"| {r['cos_joint_ce']:+.3f} | {r['cos_joint_distill']:+.3f} | {r['cos_joint_extra']:+.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"batches": args.batches, "rows": rows}, indent=1) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
