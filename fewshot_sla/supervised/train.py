"""Training loop of the supervised pipelines (standard and long-tailed CIFAR).

One function, :func:`run_training`, trains a :class:`~.model.SupervisedModel` in a run
directory (``fewshot_sla.runs.RunDir``): ``config.json``, ``metrics.jsonl`` (one JSON object
per log line, the schema of the meta-training side: ``kind`` = train / val / test, ``step``
(iterations done), ``epoch``, ``loss``, ``loss_<part>``, ``acc``, ``acc_<inference>``),
``last.pt`` and ``best.pt`` (atomic), ``summary.json`` and ``curves.png`` (drawn by
``fewshot_sla.plots.plot_curves``; ``fewshot-sla plot RUN`` redraws it).

Determinism and exact resume: the batch of iteration ``i`` and its augmentation depend
only on ``(seed, i)`` (:class:`BatchPlan`, :func:`derive_seed`), never on a generator
carried along the run, so a run resumed from ``last.pt`` draws exactly the batches the
uninterrupted run would have drawn; the checkpoint holds the model, optimiser and
scheduler states, the running training-loss sums, and the best validation score.

Batches. Iteration-based runs (``epochs = 0``, the SLA code) draw each batch of B distinct
indices independently (``numpy`` ``choice(n, B, replace=False)``, as its ``random.sample`` sampler); epoch-based
runs (``epochs > 0``, LDAM-DRW) walk through a fresh permutation per epoch in batches of B,
the last one smaller (``ceil(n / B)`` iterations per epoch). ``BatchPlan.batch_indices(i,
rank, world)`` returns rank ``rank``'s contiguous share of the global batch, so a DDP run
on ``world`` processes trains on the same global batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError
from ..data.augment import AugmentConfig, BatchAugment, get_augmentation
from ..data.base import holdout_per_class
from ..distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    bn_stats_frozen,
    broadcast_module,
    broadcast_object,
    check_sync_bn,
    convert_sync_bn,
    init_distributed,
    resolve_dist_device,
    wrap_ddp,
)
from ..optim import build_sgd, piecewise_lr_factor
from ..runs import RunDir, derive_seed, get_rng_state, load_checkpoint, seed_everything, seeded_generator, to_jsonable
from ..transforms import get_transform_set
from . import evaluate as ev
from .config import LDAM_DRW_MEAN, LDAM_DRW_STD, SupervisedConfig, parse_backbone_options
from .longtail import class_counts, longtail_counts, longtail_indices
from .losses import class_balanced_weights, ldam_margins, supervised_loss
from .model import SupervisedModel, build_model

__all__ = [
    "CHECKPOINT_FORMAT",
    "SupervisedData",
    "BatchPlan",
    "Schedule",
    "prepare_data",
    "load_data",
    "make_schedule",
    "class_weight_schedule",
    "run_training",
    "model_from_checkpoint",
]

CHECKPOINT_FORMAT = "fewshot-sla-supervised/1"
_SAMPLE_STREAM, _AUGMENT_STREAM, _DROPOUT_STREAM = 1, 2, 3


# ---------------------------------------------------------------------------- data
@dataclass
class SupervisedData:
    """Training, validation and test images (uint8 ``[n, C, H, W]``) with int64 labels.

    ``class_counts`` are the training-set counts (after the long-tailed subsampling);
    validation tensors are empty without a validation set (``validation_size = 0``).
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str]
    class_counts: list[int]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])


def prepare_data(train: Any, test: Any, cfg: SupervisedConfig) -> SupervisedData:
    """Subsample the long-tailed training set, or hold out the validation images.

    ``train`` and ``test`` are any objects with ``images`` (uint8 ``[n, C, H, W]``), ``labels``
    and ``class_names`` (e.g. :class:`fewshot_sla.data.ImageDataset`). Long-tailed runs are cut
    from the full training set, as Cao et al.: ``n_max`` of the profile is a class's full count
    (the smallest one if they differ; 5,000 for CIFAR-10, 500 for CIFAR-100), and they have no
    validation set (:attr:`SupervisedConfig.validation_size` is 0 for them). Balanced runs hold
    out ``validation_size / C`` images per class with ``split_seed``.
    """
    images, labels = train.images, torch.as_tensor(train.labels).long()
    names = list(train.class_names)
    C = len(names)
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"training images must be uint8 [n, C, H, W], got {images.dtype} {tuple(images.shape)}")
    val_images, val_labels = images[:0], labels[:0]
    val_size = cfg.validation_size
    if cfg.long_tailed:  # the config refuses val_size > 0 here: the profile needs every image of class 0
        target = longtail_counts(min(class_counts(labels, C)), C, cfg.imbalance_ratio)
        keep = torch.from_numpy(longtail_indices(labels, target, cfg.imbalance_seed))
        images, labels = images[keep], labels[keep]
    elif val_size > 0:
        per_class = val_size // C
        if per_class < 1:
            raise ConfigError(f"--val-size {val_size} is smaller than the number of classes ({C}); "
                              f"pass at least {C} or 0 for no validation")
        tr, va = holdout_per_class(labels, per_class, cfg.split_seed, "--val-size")
        val_images, val_labels = images[torch.from_numpy(va)], labels[torch.from_numpy(va)]
        images, labels = images[torch.from_numpy(tr)], labels[torch.from_numpy(tr)]
    if len(test.class_names) != C:
        raise ValueError(f"train has {C} classes but test has {len(test.class_names)}; use splits of one dataset")
    return SupervisedData(
        train_images=images,
        train_labels=labels,
        val_images=val_images,
        val_labels=val_labels,
        test_images=test.images,
        test_labels=torch.as_tensor(test.labels).long(),
        class_names=names,
        class_counts=class_counts(labels, C),
    )


def load_data(cfg: SupervisedConfig, need_train: bool = True) -> SupervisedData:
    """Load ``cfg.dataset`` from ``cfg.data_root`` (train and test) and :func:`prepare_data`.

    ``need_train=False`` loads the test split alone (the training and validation tensors are
    then empty and ``class_counts`` all zero).
    """
    from ..data import get_dataset

    kw = {"cache_dir": cfg.cache_dir} if cfg.cache_dir else {}
    test = get_dataset(cfg.dataset, cfg.data_root, "test", **kw)
    if need_train:
        return prepare_data(get_dataset(cfg.dataset, cfg.data_root, "train", **kw), test, cfg)
    empty_x, empty_y = test.images[:0], torch.as_tensor(test.labels)[:0].long()
    names = list(test.class_names)
    return SupervisedData(empty_x, empty_y, empty_x, empty_y, test.images, torch.as_tensor(test.labels).long(),
                          names, [0] * len(names))


# ---------------------------------------------------------------------------- sampling
@dataclass(frozen=True)
class BatchPlan:
    """Which training indices iteration ``i`` uses: a pure function of ``(seed, i)``.

    ``epoch_based=False``: every batch is ``batch_size`` distinct indices drawn independently.
    ``epoch_based=True``: epoch ``e`` is a permutation seeded by ``(seed, e)`` cut into
    ``iterations_per_epoch = ceil(n / batch_size)`` batches (the last one smaller).
    """

    num_samples: int
    batch_size: int
    seed: int = 0
    epoch_based: bool = False

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ValueError("the training set is empty; check the dataset and --imbalance-ratio/--val-size")
        if not self.epoch_based and self.batch_size > self.num_samples:
            raise ValueError(f"--batch-size {self.batch_size} exceeds the {self.num_samples} training images; "
                             "lower --batch-size")

    @property
    def iterations_per_epoch(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def _rng(self, key: int) -> np.random.Generator:
        return np.random.default_rng([int(self.seed) & 0xFFFFFFFF, _SAMPLE_STREAM, int(key)])

    @lru_cache(maxsize=2)  # noqa: B019 - memo of a pure function on a frozen (hashable) instance
    def _permutation(self, epoch: int) -> torch.Tensor:
        return torch.from_numpy(self._rng(epoch).permutation(self.num_samples))

    def global_batch(self, iteration: int) -> torch.Tensor:
        """All indices (int64 ``[b]``) of iteration ``iteration`` (0-based)."""
        if self.epoch_based:
            epoch, pos = divmod(int(iteration), self.iterations_per_epoch)
            return self._permutation(epoch)[pos * self.batch_size : (pos + 1) * self.batch_size]
        idx = self._rng(iteration).choice(self.num_samples, self.batch_size, replace=False)
        return torch.from_numpy(idx.astype(np.int64))

    def batch_indices(self, iteration: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """Rank ``rank``'s contiguous share (of ``world``) of the global batch of ``iteration``."""
        if not 0 <= rank < world:
            raise ValueError(f"need 0 <= rank < world, got rank={rank}, world={world}")
        idx = self.global_batch(iteration)
        return idx if world == 1 else torch.tensor_split(idx, world)[rank]


def batch_chunks(global_batch: torch.Tensor, rank: int = 0, world: int = 1,
                 accumulate: int = 1) -> list[tuple[int, torch.Tensor]]:
    """``(chunk number, indices)`` of each forward/backward chunk ``rank`` runs on an
    iteration's ``global_batch`` (:meth:`BatchPlan.global_batch`).

    Rank ``r``'s contiguous share (as :meth:`BatchPlan.batch_indices`) is cut into
    ``accumulate`` contiguous chunks numbered ``r * accumulate + a``: one process with
    ``accumulate = K`` runs the same chunks as K processes with ``accumulate = 1``.
    """
    share = global_batch if world == 1 else torch.tensor_split(global_batch, world)[rank]
    return [(rank * accumulate + a, part) for a, part in enumerate(torch.tensor_split(share, accumulate))]


def _check_chunks(plan: BatchPlan, parts: int, batch_size: int) -> None:
    """Every chunk of every batch (also an epoch's smaller last batch) must hold an image."""
    last = plan.num_samples % batch_size if plan.epoch_based else 0
    if batch_size % parts or 0 < last < parts:
        raise ConfigError(
            f"--batch-size {batch_size} (last batch of an epoch: {last or batch_size}) does not split into "
            f"{parts} chunks (processes x --accumulate) of at least one image each; use a --batch-size that "
            f"is a multiple of {parts}"
        )


def _predict(model, images, labels, tset, preprocess, info: DistInfo, **kw) -> ev.Predictions:
    """:func:`evaluate.predict` with the images split into contiguous shares across ranks and
    the predictions gathered (every rank returns all of them, in order)."""
    if not info.enabled:
        return ev.predict(model, images, labels, tset, preprocess, **kw)
    bounds = torch.tensor_split(torch.arange(images.shape[0]), info.world_size)[info.rank]
    lo, hi = (int(bounds[0]), int(bounds[-1]) + 1) if len(bounds) else (0, 0)
    mine = ev.predict(model, images[lo:hi], labels[lo:hi], tset, preprocess, **kw)
    parts = all_gather_objects(mine, info)
    return ev.Predictions(
        labels=torch.cat([p.labels for p in parts]),
        logits={k: torch.cat([p.logits[k] for p in parts]) for k in mine.logits},
        rows_correct={k: torch.cat([p.rows_correct[k] for p in parts]) for k in mine.rows_correct},
    )


# ---------------------------------------------------------------------------- schedules
@dataclass(frozen=True)
class Schedule:
    """The run's length and schedule points, in iterations."""

    total: int
    iterations_per_epoch: int  # 0 for iteration-based runs
    milestones: tuple[int, ...]
    factors: tuple[float, ...]
    warmup: int
    drw_start: int
    eval_every: int
    warmup_unit: int = 1  # iterations per warm-up step: 1, or iterations_per_epoch for a per-epoch warm-up

    def lr_factor(self, iteration: int) -> float:
        """The lr multiplier of ``iteration`` (0-based): ``factors[k]`` past ``k`` milestones;
        during the warm-up, step ``s = iteration // warmup_unit`` of ``W = warmup // warmup_unit``
        runs at ``(s + 1) / W`` of it (milestones of a per-epoch warm-up lie on epoch boundaries)."""
        u = self.warmup_unit
        return piecewise_lr_factor(iteration // u, tuple(m // u for m in self.milestones), self.factors,
                                   self.warmup // u)


def make_schedule(cfg: SupervisedConfig, num_samples: int) -> Schedule:
    """Convert the fractions of ``cfg`` into iterations.

    Epoch-based runs place milestones and the DRW switch at epoch boundaries
    (``frac * epochs`` rounded half up); warm-up is ``warmup * total`` iterations (rounded), or
    with ``warmup_by = "epoch"`` ``warmup * epochs`` whole epochs (rounded half up; LDAM-DRW:
    0.025 * 200 = 5 epochs at 1/5, 2/5, ..., 5/5 of the lr).
    """
    if cfg.epochs > 0:
        ipe = math.ceil(num_samples / cfg.batch_size)
        units, unit = cfg.epochs, ipe
    else:
        ipe, units, unit = 0, cfg.iterations, 1
    total = units * unit

    def at(frac: float) -> int:
        return math.floor(frac * units + 0.5) * unit

    return Schedule(
        total=total,
        iterations_per_epoch=ipe,
        milestones=tuple(at(m) for m in cfg.lr_milestones),
        factors=tuple(cfg.lr_factors),
        warmup=at(cfg.warmup) if cfg.warmup_by == "epoch" else math.floor(cfg.warmup * total + 0.5),
        drw_start=at(cfg.drw_start),
        eval_every=cfg.eval_every * unit,
        warmup_unit=unit if cfg.warmup_by == "epoch" else 1,
    )


def class_weight_schedule(
    cfg: SupervisedConfig, counts: Sequence[int], drw_start: int, device: torch.device | str = "cpu"
) -> Callable[[int], torch.Tensor | None]:
    """``weights(iteration)``: the class-balanced weights when re-weighting is on at that
    iteration (``--loss cb``: always; ``--drw``: from ``drw_start``), else ``None``."""
    if not cfg.reweighted:
        return lambda it: None
    w = class_balanced_weights(counts, cfg.cb_beta).to(device)
    if cfg.drw:
        return lambda it: w if it >= drw_start else None
    return lambda it: w


# ---------------------------------------------------------------------------- helpers
def _preprocessors(cfg: SupervisedConfig, image_size: int) -> tuple[BatchAugment, BatchAugment]:
    """(training augmentation, evaluation normalisation) of ``cfg.augment``."""
    if cfg.augment == "ldam":  # crop + flip, normalised with LDAM-DRW's constants
        train_aug = get_augmentation(cfg.dataset, "standard", image_size=image_size, mean=LDAM_DRW_MEAN,
                                     std=LDAM_DRW_STD)
    else:
        train_aug = get_augmentation(cfg.dataset, cfg.augment, image_size=image_size)
    c = train_aug.config
    return train_aug, BatchAugment(AugmentConfig(mean=c.mean, std=c.std))


def _model_for(cfg: SupervisedConfig, num_classes: int, M: int, channels: int, image_size: int) -> SupervisedModel:
    return build_model(
        cfg.backbone, num_classes, M, cfg.mode,
        in_channels=channels, image_size=image_size, cosine=cfg.cosine, scale=cfg.ldam_scale,
        backbone_options=parse_backbone_options(cfg.backbone_options),
    )


def _train_primary_logits(mode: str, out: dict[str, torch.Tensor], M: int) -> torch.Tensor:
    if mode == "sla":
        from .. import sla

        return sla.single_logits(out["joint"], M)
    return out["class"][::M]


def model_from_checkpoint(state: dict, device: torch.device | str = "cpu") -> tuple[SupervisedModel, dict]:
    """Rebuild the model of a checkpoint written by :func:`run_training`; returns
    ``(model in eval mode, checkpoint metadata)``."""
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"not a supervised checkpoint (format {state.get('format')!r}, expected {CHECKPOINT_FORMAT!r}); "
            "pass best.pt/last.pt of a `fewshot-sla supervised` run"
        )
    cfg = SupervisedConfig(**state["config"])
    meta = state["meta"]
    model = _model_for(cfg, meta["num_classes"], meta["M"], meta["channels"], meta["image_size"])
    model.load_state_dict(state["model"])
    model.to(torch.device(device)).eval()
    return model, meta


def _epoch_of(it: int, sched: Schedule, num_samples: int, batch_size: int) -> float:
    """Epochs done after ``it`` iterations (fractional; ``it * B / n`` for iteration-based runs)."""
    if sched.iterations_per_epoch:
        return it / sched.iterations_per_epoch
    return it * batch_size / num_samples


def _log_train(run: RunDir, meter: dict, it: int, epoch: float, lr: float, elapsed: float) -> dict:
    n = max(meter["steps"], 1)
    rec = {"kind": "train", "epoch": epoch, "step": it, "lr": lr, "steps": meter["steps"]}
    for k, v in meter["sums"].items():
        rec[k] = float(v) / n
    rec["acc"] = float(meter["correct"]) / max(float(meter["seen"]), 1.0)
    rec["time"] = round(elapsed, 3)
    run.log(rec)
    return rec


def _new_meter(device: torch.device) -> dict:
    z = torch.zeros((), device=device)
    return {"steps": 0, "sums": {}, "correct": z.clone(), "seen": z.clone()}


# ---------------------------------------------------------------------------- training
def run_training(
    cfg: SupervisedConfig,
    *,
    data: SupervisedData | None = None,
    resume: bool = False,
) -> dict:
    """Train (or, with ``resume``, continue) the run ``cfg.out_dir``; return the summary.

    ``data`` replaces loading ``cfg.dataset`` (tests pass tiny in-memory data). A run that
    stops at ``cfg.stop_after`` returns ``{"stopped_at": iteration, ...}`` without a summary.
    """
    t_start = time.perf_counter()
    device = resolve_dist_device(cfg.device)
    info = init_distributed(device, cfg.dist_timeout)  # a no-op without torchrun
    if cfg.sync_bn:
        check_sync_bn(info, device)
    out_dir = Path(broadcast_object(cfg.out_dir or cfg.default_out_dir(), info))
    if not resume and (out_dir / "last.pt").exists():
        raise ConfigError(
            f"run directory {out_dir} already holds a checkpoint; continue it with --resume {out_dir} "
            "or choose another --out-dir"
        )
    if resume and not (out_dir / "last.pt").exists():
        raise FileNotFoundError(f"cannot resume: {out_dir / 'last.pt'} not found; start the run without --resume")
    data = data if data is not None else load_data(cfg)
    tset = get_transform_set(cfg.transform_name)
    tset.check_input(data.channels, data.image_size, data.image_size)
    M = tset.M
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    seed_everything(cfg.seed)
    model = _model_for(cfg, data.num_classes, M, data.channels, data.image_size)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt)
    if cfg.sync_bn:
        model = convert_sync_bn(model, info, device)
    optimizer = build_sgd(model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov)
    plan = BatchPlan(len(data.train_labels), cfg.batch_size, cfg.seed, epoch_based=cfg.epochs > 0)
    n_chunks = info.world_size * cfg.accumulate
    _check_chunks(plan, n_chunks, cfg.batch_size)
    ddp_model = wrap_ddp(model, info, device)  # the training forward; `model` stays the unwrapped module
    sched = make_schedule(cfg, len(data.train_labels))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: sched.lr_factor(it))
    weight_at = class_weight_schedule(cfg, data.class_counts, sched.drw_start, device)
    margins = ldam_margins(data.class_counts, cfg.ldam_max_margin).to(device) * cfg.ldam_scale \
        if cfg.loss == "ldam" else None
    train_aug, preprocess = _preprocessors(cfg, data.image_size)

    train_images = data.train_images.to(device)
    train_labels = data.train_labels.to(device)
    meta = {
        "num_classes": data.num_classes, "M": M, "channels": data.channels, "image_size": data.image_size,
        "class_names": data.class_names, "class_counts": data.class_counts, "mode": cfg.mode,
        "transforms": tset.name, "mean": list(preprocess.config.mean or ()),
        "std": list(preprocess.config.std or ()), "train_size": len(data.train_labels),
        "val_size": len(data.val_labels), "total_iterations": sched.total,
        "iterations_per_epoch": sched.iterations_per_epoch,
    }

    run = RunDir(out_dir, enabled=info.is_main)
    start, best = 0, {"score": -math.inf, "iteration": 0}
    meter = _new_meter(device)
    if resume:
        state = load_checkpoint(run.last, map_location=device)
        saved = state.get("meta", {})
        if (saved.get("class_counts"), saved.get("M")) != (data.class_counts, M):
            raise ConfigError(
                f"cannot resume {out_dir}: its training set had class counts {saved.get('class_counts')} and "
                f"M={saved.get('M')}, the data given now {data.class_counts} and M={M}; resume with the run's "
                "dataset and options"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best, meter = state["iteration"], state["best"], state["meter"]
        run.truncate_metrics(lambda r: r.get("step", 0) <= start and not r.get("final"))
    else:
        run.write_json("config.json", cfg)

    def checkpoint(it: int, is_best: bool) -> None:
        if not info.is_main:
            return
        run.save({
            "format": CHECKPOINT_FORMAT, "config": dataclasses.asdict(cfg), "meta": meta,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "iteration": it, "best": best, "meter": meter,
            "rng": get_rng_state(),
        }, best=is_best)

    def evaluate_split(images: torch.Tensor, labels: torch.Tensor) -> dict:
        broadcast_module(model, info)  # every rank evaluates rank 0's weights and statistics
        pred = _predict(model, images, labels, tset, preprocess, info, batch_size=cfg.eval_batch_size,
                        device=device, channels_last=cfg.channels_last, amp=cfg.amp)
        counts = data.class_counts if cfg.long_tailed else None
        return ev.accuracy_report(pred, data.num_classes, counts)

    primary = ev.PRIMARY[cfg.mode]

    def epoch_of(it: int) -> float:
        return _epoch_of(it, sched, len(data.train_labels), cfg.batch_size)
    stop = cfg.stop_after if 0 < cfg.stop_after < sched.total else sched.total
    bar = _progress(cfg, sched.total, start) if info.is_main else _NoBar()
    model.train()
    try:
        for it in range(start, stop):
            global_batch = plan.global_batch(it)
            n_global = global_batch.numel()
            optimizer.zero_grad(set_to_none=True)
            chunks = batch_chunks(global_batch, info.rank, info.world_size, cfg.accumulate)
            step_sums: dict[str, torch.Tensor] = {}
            correct = torch.zeros((), device=device)
            for a, (chunk, part) in enumerate(chunks):
                idx = part.to(device)
                keys = (cfg.seed, _AUGMENT_STREAM, it) + ((n_chunks, chunk) if n_chunks > 1 else ())
                torch.manual_seed(derive_seed(cfg.seed, _DROPOUT_STREAM, it, chunk))
                x = train_aug(train_images[idx], generator=seeded_generator(*keys))
                y = train_labels[idx]
                xt = tset(x)
                if cfg.channels_last:
                    xt = xt.contiguous(memory_format=torch.channels_last)
                # this chunk's share of the global mean; DDP divides the summed gradients by the world size
                share = idx.numel() / n_global
                last = a == len(chunks) - 1
                no_sync = ddp_model.no_sync() if info.enabled and not last else contextlib.nullcontext()
                with no_sync, bn_stats_frozen(model, a > 0):
                    with ev.autocast(device, cfg.amp):
                        out = ddp_model(xt)
                    out = {k: v.float() for k, v in out.items()}
                    parts = supervised_loss(
                        cfg.mode, out, y, M, weight=weight_at(it), margin=margins,
                        joint_loss=cfg.joint_loss, large_loss=cfg.large_loss, temperature=cfg.temperature,
                        sd_beta=cfg.sd_beta,
                    )
                    (parts["total"] * (share * info.world_size)).backward()
                with torch.no_grad():
                    for k, v in parts.items():
                        step_sums[k] = step_sums.get(k, 0.0) + v.detach() * share
                    correct += (_train_primary_logits(cfg.mode, out, M).argmax(-1) == y).sum()
            optimizer.step()
            lr_used = optimizer.param_groups[0]["lr"]
            scheduler.step()

            with torch.no_grad():  # the step's numbers over every rank's share (one small all-reduce)
                totals = all_reduce_sum(torch.stack([*step_sums.values(), correct]), info)
                meter["steps"] += 1
                for k, v in zip(step_sums, totals[:-1]):
                    key = "loss" if k == "total" else f"loss_{k}"
                    meter["sums"][key] = meter["sums"].get(key, 0.0) + v
                meter["correct"] += totals[-1]
                meter["seen"] += n_global
            done = it + 1
            bar.update(1)
            if done % cfg.log_every == 0:
                rec = _log_train(run, meter, done, epoch_of(done), lr_used,
                                 time.perf_counter() - t_start)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['acc']:.3f}")
                meter = _new_meter(device)
            if done % sched.eval_every == 0 or done == sched.total:
                is_best = _validate(cfg, run, done, epoch_of(done), data, evaluate_split, best, primary)
                checkpoint(done, is_best)
        if stop < sched.total:
            checkpoint(stop, False)
            bar.close()
            msg = (f"stopped after iteration {stop} of {sched.total}; continue with "
                   f"`fewshot-sla supervised --resume {out_dir}`")
            return {"stopped_at": stop, "total_iterations": sched.total, "run_dir": str(out_dir), "message": msg}
    finally:
        bar.close()

    # ---- final: test accuracy of the selected checkpoint
    state = None
    if info.is_main:  # rank 0 reads best.pt; evaluate_split hands its weights to the other ranks
        state = load_checkpoint(run.best, map_location=device)
        model.load_state_dict(state["model"])
    state = broadcast_object(None if state is None else {"iteration": state["iteration"], "best": state["best"]}, info)
    test = evaluate_split(data.test_images, data.test_labels)
    val_at_best = state["best"].get("val")
    entries = ev.table_entries(cfg.mode, cfg.loss, cfg.drw)
    summary = {
        "run_dir": str(out_dir),
        "dataset": cfg.dataset,
        "imbalance_ratio": cfg.imbalance_ratio,
        "mode": cfg.mode,
        "transforms": tset.name,
        "M": M,
        "loss": cfg.loss,
        "drw": cfg.drw,
        "loss_method": ev.method_name(cfg.loss, cfg.drw),
        "primary": primary,
        "selection": "validation accuracy of the primary inference" if len(data.val_labels) else "last checkpoint",
        "best_iteration": state["iteration"],
        "total_iterations": sched.total,
        "train_size": len(data.train_labels),
        "class_counts": data.class_counts,
        "val": val_at_best,
        "test": test,
        "table": {name: test["accuracy"][inf] for name, inf in entries.items()},
        "elapsed_s": time.perf_counter() - t_start,
    }
    run.log({"kind": "test", "epoch": epoch_of(state["iteration"]), "step": state["iteration"], "final": True,
             **{f"acc_{k}": v for k, v in test["accuracy"].items()}})
    run.write_json("summary.json", summary)
    if cfg.plot and info.is_main:
        _plot(out_dir)
    barrier(info)
    return to_jsonable(summary)


def _plot(out_dir: Path) -> None:
    """``curves.png`` with the meta-training side's plotter (same metrics schema); skipped with a
    note when matplotlib is missing."""
    try:
        from ..plots import plot_curves

        plot_curves(out_dir)
    except ImportError as e:
        print(f"note: no curves.png: {e}")


def _validate(cfg, run, done, epoch, data, evaluate_split, best, primary) -> bool:
    """Evaluate val (and test when asked), log, and update ``best`` in place; returns whether
    this iteration is the new best (always true without a validation set)."""
    if len(data.val_labels):
        val = evaluate_split(data.val_images, data.val_labels)
        score = val["accuracy"][primary]
        is_best = score > best["score"]
        run.log({"kind": "val", "epoch": epoch, "step": done, "reported": primary, "score": score, "best": is_best,
                 **{f"acc_{k}": v for k, v in val["accuracy"].items()}})
        if is_best:
            best.update(score=score, iteration=done, val=val["accuracy"])
    else:
        is_best = True
        best.update(score=float(done), iteration=done)
    if cfg.eval_test:
        test = evaluate_split(data.test_images, data.test_labels)
        trec = {"kind": "test", "epoch": epoch, "step": done, **{f"acc_{k}": v for k, v in test["accuracy"].items()}}
        if "groups" in test:
            trec.update({f"{g}_{primary}": v for g, v in test["groups"][primary].items() if g != "overall"})
        run.log(trec)
    return is_best


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kw: Any) -> None: ...
    def close(self) -> None: ...


def _progress(cfg: SupervisedConfig, total: int, start: int):
    if not cfg.progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=f"{cfg.mode} {cfg.transform_name}", dynamic_ncols=True,
                unit="it")
