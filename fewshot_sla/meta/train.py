"""Meta-training loop: episodes, validation, checkpoints and exact resume.

One optimiser step takes ``tasks_per_batch`` episodes of the global training stream
(:func:`~fewshot_sla.meta.batches.episode_indices`), gathers them in one tensor, augments them on
the device, and sends every image of every episode (and, for da/sla/sla+sd, every transform)
through the backbone in one call (:mod:`fewshot_sla.meta.methods` gives the losses). The LR
follows a piecewise schedule per epoch: ``lr_milestones`` count completed epochs (MetaOptNet:
x1 / 0.06 / 0.012 / 0.0024 from its 1-based epochs 1 / 20 / 40 / 50, since it steps its
``LambdaLR`` at the start of each epoch: milestones 19 / 39 / 49).

After every ``val_every`` epochs (and the last) the model is evaluated on ``val_episodes``
fixed episodes of the validation split; ``best.pt`` keeps the weights with the best mean
accuracy of the mode's reported inference and ``last.pt`` the latest state, both written
atomically. A checkpoint holds the model, optimiser, scheduler, grad scaler, progress, best
score and the RNG states; each step's augmentation and dropout are seeded from ``(seed, step,
chunk)`` (:func:`~fewshot_sla.runs.derive_seed`), so ``--resume RUN`` continues a killed run and
ends with the same weights and metrics as an uninterrupted run with the same seed;
``metrics.jsonl`` is truncated to the records at or before the checkpoint's step.

Distributed (``torchrun --nproc-per-node K -m fewshot_sla.cli meta-train ...``): the step's
``tasks_per_batch`` episodes split into ``G = K * accumulate`` chunks (episode ``i`` in chunk
``i mod G``); rank ``r`` runs the chunks ``r, r + K, ...``, DDP averages the gradients. Each
chunk's randomness (augmentation, dropout) is seeded from ``(seed, step, chunk)`` and only a
rank's first chunk updates the BatchNorm running statistics, so K processes compute exactly
what one process with ``--accumulate K`` computes (same losses, same weights). Validation
episodes are split across ranks and gathered. Only rank 0 writes the run directory; the
checkpoints hold the unwrapped model, so they load without torch.distributed, and
``--resume`` works with any world size (the run directory must be visible to every node).

Run directory: ``config.json`` (resolved config), ``metrics.jsonl`` (``kind`` = ``train``:
running means over the steps since the previous record; ``kind`` = ``val``: accuracy and CI
per inference), ``last.pt``, ``best.pt``, ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError
from ..distributed import barrier, broadcast_module, convert_sync_bn, wrap_ddp
from ..engine import (
    ChunkedStep,
    amp_dtype,
    claim_run_dir,
    make_checkpoint,
    progress,
    read_checkpoint,
    start_session,
)
from ..engine import resume_config as _resume_config
from ..episodes import EpisodeSampler
from ..guards import check_finite_weights
from ..optim import build_optimizer, piecewise_scheduler
from ..rundir import RunDir
from ..seeding import get_rng_state, seed_everything, seeded_generator, set_rng_state
from .batches import EpisodeDataset, dataset_channels, load_batch, load_split, make_preprocess, step_chunks
from .config import RESUME_OVERRIDES, EvalConfig, MetaTrainConfig, check_against_data, check_world_size
from .evaluate import evaluate_episodes, load_model, summarize
from .methods import EpisodeOutput, LossSettings, run_episodes
from .model import FewShotModel, build_model

__all__ = ["train", "resume_config", "default_run_dir", "MetaTrainer"]

# streams of derive_seed(seed, stream, step, chunk): augmentation and the global RNG (dropout)
_AUGMENT_STREAM, _DROPOUT_STREAM = 7, 8


class _EpisodeLoss(torch.nn.Module):
    """``batch -> EpisodeOutput`` with the training loss: the module DDP wraps, so that
    the whole method (backbone, head, scales) runs inside DDP's forward."""

    def __init__(self, model: FewShotModel, settings: LossSettings) -> None:
        super().__init__()
        self.model = model
        self.settings = settings

    def forward(self, batch, distill: bool = True) -> EpisodeOutput:  # noqa: ANN001 - EpisodeBatch
        settings = self.settings if distill else dataclasses.replace(self.settings, sd_distill=False)
        return run_episodes(self.model, batch, loss=settings)


def default_run_dir(cfg: MetaTrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(cfg.runs_root) / f"{cfg.dataset}-{cfg.backbone}-{cfg.head}-{cfg.mode.replace('+', '')}-{stamp}"


def resume_config(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> MetaTrainConfig:
    """The config of the run in ``run_dir`` with the allowed ``overrides`` applied.

    Only :data:`~fewshot_sla.meta.config.RESUME_OVERRIDES` may change (e.g. ``epochs`` to
    extend a run); anything else would change the numbers and is refused.
    """
    return _resume_config(MetaTrainConfig, run_dir, overrides, RESUME_OVERRIDES)


def _dataset_stats(ds: EpisodeDataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean, std = getattr(ds, "mean", None), getattr(ds, "std", None)
    if mean is None or std is None:
        from ..data.base import channel_stats

        mean, std = channel_stats(ds.images)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


class MetaTrainer:
    """State of one meta-training run (use :func:`train`)."""

    def __init__(self, cfg: MetaTrainConfig, datasets: dict[str, EpisodeDataset] | None = None,
                 resume: bool = False) -> None:
        self.cfg = cfg
        session = start_session(cfg.device, num_threads=cfg.num_threads, dist_timeout=cfg.dist_timeout,
                                sync_bn=cfg.sync_bn, deterministic=cfg.deterministic)
        self.device, self.dist = session.device, session.dist
        check_world_size(cfg, self.dist.world_size)
        self.quiet = cfg.quiet or not self.dist.is_main
        if cfg.mode != "baseline":  # fail before loading data when the channels are known
            ch = dataset_channels(cfg.dataset)
            if ch is not None:
                check_against_data(cfg, cfg.train_split, ch, 0, 10**9)
        # every rank uses rank 0's (time-stamped) directory name
        run_path = claim_run_dir(cfg.run_dir or default_run_dir(cfg), self.dist, resume=resume)
        datasets = dict(datasets or {})
        self.train_ds = datasets.get("train") or self._load(cfg.train_split)
        self.val_ds = None
        if cfg.val_episodes:
            self.val_ds = datasets.get("val") or self._load(cfg.val_split)
        self.test_ds = datasets.get("test")
        ds = self.train_ds
        check_against_data(cfg, cfg.train_split, ds.channels, ds.image_size, len(ds.class_names), "train")
        if self.val_ds is not None:
            v = self.val_ds
            check_against_data(cfg, cfg.val_split, v.channels, v.image_size, len(v.class_names), "val")
            if (v.channels, v.image_size) != (ds.channels, ds.image_size):
                raise ConfigError(
                    f"validation images are {v.channels}x{v.image_size}px but training images "
                    f"{ds.channels}x{ds.image_size}px; set --image-size"
                )
        self.mean, self.std = _dataset_stats(ds)
        names = list(ds.class_names)
        self.sampler = EpisodeSampler(ds.labels, cfg.n_way, cfg.k_shot, cfg.n_query,
                                      cfg.episodes_per_epoch * cfg.epochs, seed=cfg.seed, class_names=names,
                                      option_names=("--n-way", "--k-shot", "--n-query"))
        if self.val_ds is not None:  # checks the episode shape against the data up front
            EpisodeSampler(self.val_ds.labels, cfg.eval_way, cfg.eval_shot, cfg.eval_query, 1,
                           class_names=list(self.val_ds.class_names),
                           option_names=("--eval-way", "--eval-shot", "--eval-query"))
        if cfg.data_on_device and self.device.type != "cpu":
            self.train_ds = _on_device(self.train_ds, self.device)
            if self.val_ds is not None:
                self.val_ds = _on_device(self.val_ds, self.device)

        self.run = RunDir(run_path, enabled=self.dist.is_main)
        if not cfg.run_dir:  # the resolved config names its run directory
            self.cfg = cfg = dataclasses.replace(cfg, run_dir=str(run_path))
        seed_everything(cfg.seed)
        self.model = build_model(cfg, ds.channels, ds.image_size).to(self.device)
        if cfg.sync_bn:
            self.model = convert_sync_bn(self.model, self.dist, self.device)
        self.amp_dtype = amp_dtype(cfg.amp, self.device)
        self.model.amp_dtype = self.amp_dtype
        if cfg.channels_last:
            self.model.channels_last = True
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(cfg.optimizer, self.model.parameters(), cfg.lr, cfg.momentum,
                                         cfg.weight_decay, cfg.nesterov)
        self.scheduler = piecewise_scheduler(self.optimizer, cfg.lr_milestones, cfg.lr_factors, cfg.warmup_epochs)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.train_pre = make_preprocess(cfg.dataset, cfg.augment, ds.image_size, self.mean, self.std)
        self.eval_pre = make_preprocess(cfg.dataset, "none", ds.image_size, self.mean, self.std)
        self.loss_settings = LossSettings(cfg.label_smoothing, cfg.large_loss, cfg.sd_temperature, cfg.sd_beta)
        # sla+sd --sd-start: the first step whose loss includes the distillation term
        self.sd_start_step = math.floor(cfg.sd_start * cfg.epochs * cfg.steps_per_epoch + 0.5)
        # the training forward: DDP(backbone + head + loss) under torchrun, the plain module otherwise
        self.step_module = wrap_ddp(_EpisodeLoss(self.model, self.loss_settings), self.dist, self.device)
        self.chunked_step = ChunkedStep(self.model, self.step_module, self.optimizer, self.scaler, self.dist,
                                        cfg.seed, _DROPOUT_STREAM)
        self.epoch = 0  # completed epochs
        self.step = 0  # completed optimiser steps
        self.best: dict[str, Any] = {"score": -math.inf, "epoch": None, "step": None, "val": None}
        self.last_val: dict[str, Any] | None = None
        self.train_time = 0.0
        if resume:
            self._load_state()
        else:  # a fresh start: a dead run's metrics rows in this directory are dropped
            self.run.start_fresh()
            self.run.write_json("config.json", cfg.to_dict())

    # -- data -------------------------------------------------------------------------------
    def _load(self, split: str) -> EpisodeDataset:
        c = self.cfg
        return load_split(c.dataset, c.data_root, split, c.image_size, c.download, c.dataset_options)

    # -- checkpoints ------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        data = {"channels": self.train_ds.channels, "image_size": self.train_ds.image_size,
                "mean": self.mean, "std": self.std, "dataset": self.cfg.dataset}
        return make_checkpoint(
            "meta", self.cfg.to_dict(), data, self.model.state_dict(),
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(), epoch=self.epoch, step=self.step, best=self.best,
            last_val=self.last_val, train_time=self.train_time, rng=get_rng_state(),
            world_size=self.dist.world_size,
        )

    def _load_state(self) -> None:
        ckpt = read_checkpoint(self.run.last, map_location="cpu")
        if ckpt["pipeline"] != "meta":
            raise ConfigError(f"{self.run.last} was written by `fewshot-sla {ckpt['pipeline']}`; resume it with "
                              f"fewshot-sla {ckpt['pipeline']} --resume {self.run.path}")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        self.best, self.last_val = ckpt["best"], ckpt["last_val"]
        self.train_time = float(ckpt.get("train_time", 0.0))
        set_rng_state(ckpt["rng"])
        step = self.step
        self.run.truncate_metrics(lambda r: r.get("step", 0) <= step)
        self.run.write_json("config.json", self.cfg.to_dict())

    # -- training ---------------------------------------------------------------------------
    def _chunk_loss(self, indices: list[int], chunk: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss (scaled for gradient accumulation) and logged values of one chunk of episodes."""
        cfg = self.cfg
        gen = seeded_generator(cfg.seed, _AUGMENT_STREAM, self.step, chunk)
        batch = load_batch(self.train_ds, self.sampler, indices, self.device, self.train_pre, gen)
        out: EpisodeOutput = self.step_module(batch, distill=self.step >= self.sd_start_step)
        vals = {"loss": out.loss.detach(), "acc": out.objective_acc.mean()}
        vals.update({f"loss_{k}": v for k, v in out.parts.items()})
        vals.update({f"acc_{k}": (v.argmax(-1) == out.labels).float().mean() for k, v in out.logits.items()})
        return out.loss / cfg.accumulate, vals

    def train_step(self) -> dict[str, torch.Tensor]:
        """One optimiser step; returns the step's mean loss terms and accuracies (over all
        ranks' episodes) as 0-d tensors."""
        cfg, dist = self.cfg, self.dist
        chunks = step_chunks(self.step, cfg.tasks_per_batch, dist.rank, dist.world_size, cfg.accumulate)
        # chunk a of this rank is global chunk rank + a * world_size (the same on any world size)
        numbered = [(dist.rank + a * dist.world_size, idx) for a, idx in enumerate(chunks)]
        sums = self.chunked_step(self.step, numbered, self._chunk_loss)
        self.step += 1
        # chunks hold equal numbers of episodes, so the mean over chunks is the step's mean
        stacked = torch.stack(list(sums.values())) / (cfg.accumulate * dist.world_size)
        return dict(zip(sums, stacked))

    def train_epoch(self) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        model.train()
        steps = cfg.steps_per_epoch
        window: dict[str, float] = defaultdict(float)
        n_window = 0
        epoch_sums: dict[str, float] = defaultdict(float)
        lr = self.optimizer.param_groups[0]["lr"]
        t0 = time.time()
        with progress(steps, f"epoch {self.epoch + 1}/{cfg.epochs}", quiet=self.quiet) as bar:
            for s in range(steps):
                vals = self.train_step()
                host = torch.stack(list(vals.values())).tolist()  # one device sync per step
                for k, v in zip(vals, host):
                    window[k] += v
                    epoch_sums[k] += v
                n_window += 1
                bar.update(1)
                bar.set_postfix(loss=f"{window['loss'] / n_window:.3f}", acc=f"{window['acc'] / n_window:.3f}")
                if (s + 1) % cfg.log_every == 0 or s + 1 == steps:
                    self.run.log({"kind": "train", "epoch": self.epoch + 1, "step": self.step, "lr": lr,
                                  "steps": n_window, **{k: v / n_window for k, v in window.items()},
                                  "time": round(self.train_time + time.time() - t0, 3)})
                    window.clear()
                    n_window = 0
        self.train_time += time.time() - t0
        return {k: v / steps for k, v in epoch_sums.items()}

    def validate(self) -> dict[str, dict[str, Any]]:
        cfg = self.cfg
        broadcast_module(self.model, self.dist)  # every rank evaluates rank 0's weights and statistics
        accs = evaluate_episodes(
            self.model, self.val_ds, self.eval_pre, n_way=cfg.eval_way, k_shot=cfg.eval_shot,
            n_query=cfg.eval_query, n_episodes=cfg.val_episodes, seed=cfg.val_seed, device=self.device,
            tasks_per_batch=cfg.eval_tasks_per_batch, quiet=self.quiet, desc="validation", dist=self.dist,
        )
        return summarize(accs, with_values=False)

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        reported = cfg.reported_inference
        while self.epoch < cfg.epochs:
            t0 = time.time()
            train_stats = self.train_epoch()
            self.epoch += 1
            self.scheduler.step()
            is_best = False
            val = None
            if self.val_ds is not None and (self.epoch % cfg.val_every == 0 or self.epoch == cfg.epochs):
                val = self.validate()
                score = val[reported]["mean"]
                is_best = score > self.best["score"]
                if is_best:
                    self.best = {"score": score, "epoch": self.epoch, "step": self.step, "val": val}
                self.last_val = {"epoch": self.epoch, "val": val}
                record = {"kind": "val", "epoch": self.epoch, "step": self.step, "reported": reported,
                          "score": score, "best": is_best}
                for k, r in val.items():
                    record[f"acc_{k}"] = r["mean"]
                    record[f"ci95_{k}"] = r["ci95"]
                self.run.log(record)
            elif self.val_ds is None:  # no validation: the latest weights are the best
                is_best = True
                self.best = {"score": None, "epoch": self.epoch, "step": self.step, "val": None}
            if self.dist.is_main:
                check_finite_weights(self.step, self.model.state_dict())  # never a non-finite checkpoint
                self.run.save(self.state(), best=is_best)
            if not self.quiet:
                print(self._epoch_line(train_stats, val, is_best, time.time() - t0), flush=True)
        return self.finish()

    def _epoch_line(self, train_stats: dict[str, float], val: dict | None, is_best: bool, secs: float) -> str:
        cfg = self.cfg
        line = f"epoch {self.epoch}/{cfg.epochs}  loss {train_stats['loss']:.4f}  acc {100 * train_stats['acc']:.2f}%"
        if val is not None:
            r = val[cfg.reported_inference]
            line += f"  | val {cfg.reported_inference} {100 * r['mean']:.2f} +- {100 * r['ci95']:.2f}%"
            others = [f"{k} {100 * v['mean']:.2f}" for k, v in val.items() if k != cfg.reported_inference]
            if others:
                line += f" ({', '.join(others)})"
            line += " *best" if is_best else f" (best {100 * self.best['score']:.2f} @{self.best['epoch']})"
        lr = self.optimizer.param_groups[0]["lr"]
        return line + f"  | next lr {lr:.4g}  {secs:.1f}s"

    def finish(self) -> dict[str, Any]:
        cfg = self.cfg
        summary: dict[str, Any] = {
            "run_dir": str(self.run.path),
            "mode": cfg.mode,
            "reported_inference": cfg.reported_inference,
            "epochs": self.epoch,
            "steps": self.step,
            "train_time_s": round(self.train_time, 3),
            "best": self.best,
            "last": self.last_val,
        }
        if cfg.test_episodes:
            summary["test"] = self.test()
        self.run.write_json("summary.json", summary)
        self.run.close()
        if not self.quiet and self.best.get("score") not in (None, -math.inf):
            print(f"best val {cfg.reported_inference} {100 * self.best['score']:.2f}% at epoch "
                  f"{self.best['epoch']}; run directory {self.run.path}", flush=True)
        return summary

    def test(self) -> dict[str, Any]:
        """Evaluate ``best.pt`` on ``test_episodes`` test episodes (seed 0, all inferences)."""
        cfg = self.cfg
        barrier(self.dist)  # rank 0 has written best.pt
        model, _, _ = load_model(self.run.best, self.device)
        model.amp_dtype = self.amp_dtype
        if cfg.channels_last:  # inputs and weights in one memory format, as `fewshot-sla eval --channels-last`
            model.channels_last = True
            model.to(memory_format=torch.channels_last)
        if cfg.head == "svm":  # as `fewshot-sla eval`: MetaOptNet's test-time QP iterations
            model.head_kwargs = {"max_iter": EvalConfig.svm_max_iter}
        ds = self.test_ds or self._load(cfg.test_split)
        accs = evaluate_episodes(
            model, ds, self.eval_pre, n_way=cfg.eval_way, k_shot=cfg.eval_shot, n_query=cfg.eval_query,
            n_episodes=cfg.test_episodes, seed=0, device=self.device,
            tasks_per_batch=cfg.eval_tasks_per_batch, quiet=self.quiet, desc="test", dist=self.dist,
        )
        res = summarize(accs, with_values=False)
        if not self.quiet:
            for k, r in res.items():
                print(f"test {k}: {100 * r['mean']:.2f} +- {100 * r['ci95']:.2f}% ({cfg.test_episodes} episodes)")
        return res


def _on_device(ds: EpisodeDataset, device: torch.device) -> EpisodeDataset:
    if hasattr(ds, "to"):
        return ds.to(device)
    return dataclasses.replace(ds, images=ds.images.to(device))


def train(cfg: MetaTrainConfig, datasets: dict[str, EpisodeDataset] | None = None,
          resume: bool = False) -> dict[str, Any]:
    """Meta-train as ``cfg`` says and return the summary (also written to ``summary.json``).

    Args:
        cfg: the run configuration (``cfg.run_dir`` is the run directory; auto-named if empty).
        datasets: optional already loaded ``{"train": ..., "val": ..., "test": ...}`` datasets
            (objects with ``images`` uint8 ``[N, C, H, W]``, ``labels``, ``class_names``,
            ``image_size``, ``channels``); missing ones are loaded with ``get_dataset``.
        resume: continue the run in ``cfg.run_dir`` from its ``last.pt``.
    """
    trainer = MetaTrainer(cfg, datasets, resume=resume)
    return trainer.fit()
