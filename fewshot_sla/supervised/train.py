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
from ..distributed import DistInfo, barrier, broadcast_module, broadcast_object, convert_sync_bn, wrap_ddp
from ..engine import (
    ChunkedStep,
    amp_dtype,
    autocast,
    claim_run_dir,
    make_checkpoint,
    progress,
    read_checkpoint,
    run_sharded,
    start_session,
)
from ..guards import check_finite_weights
from ..inferences import reported
from ..optim import build_sgd, piecewise_lr_factor
from ..rundir import RunDir, to_jsonable
from ..seeding import get_rng_state, seed_everything, seeded_generator
from ..transforms import get_transform_set
from . import evaluate as ev
from .config import SupervisedConfig
from .data import SupervisedData, load_data, prepare_data, preprocessors
from .losses import class_balanced_weights, ldam_margins, supervised_loss
from .model import model_for_config, model_from_checkpoint

__all__ = [
    "SupervisedData",
    "BatchPlan",
    "Schedule",
    "SupervisedTrainer",
    "prepare_data",
    "load_data",
    "make_schedule",
    "class_weight_schedule",
    "run_training",
    "model_from_checkpoint",
]

_SAMPLE_STREAM, _AUGMENT_STREAM, _DROPOUT_STREAM = 1, 2, 3
_preprocessors = preprocessors  # the name earlier versions used


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
    def run(idx: list[int]) -> ev.Predictions:
        lo, hi = (idx[0], idx[-1] + 1) if idx else (0, 0)
        return ev.predict(model, images[lo:hi], labels[lo:hi], tset, preprocess, **kw)

    parts = [p for _, p in run_sharded(images.shape[0], info, run, contiguous=True)]
    if len(parts) == 1:
        return parts[0]
    return ev.Predictions(
        labels=torch.cat([p.labels for p in parts]),
        logits={k: torch.cat([p.logits[k] for p in parts]) for k in parts[0].logits},
        rows_correct={k: torch.cat([p.rows_correct[k] for p in parts]) for k in parts[0].rows_correct},
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
    sd_start: int = 0  # SLA+SD: first iteration with the distillation term
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
        sd_start=math.floor(cfg.sd_start * total + 0.5),
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
def _train_primary_logits(mode: str, out: dict[str, torch.Tensor], M: int) -> torch.Tensor:
    if mode == "sla":
        from .. import sla

        return sla.single_logits(out["joint"], M)
    return out["class"][::M]


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
class SupervisedTrainer:
    """State of one supervised run (use :func:`run_training`); the shared machinery (session, run
    directory, chunked step, checkpoint format) is :mod:`fewshot_sla.engine`'s."""

    def __init__(self, cfg: SupervisedConfig, data: SupervisedData | None = None, resume: bool = False) -> None:
        self.t_start = time.perf_counter()
        self.cfg = cfg
        session = start_session(cfg.device, num_threads=cfg.num_threads, dist_timeout=cfg.dist_timeout,
                                sync_bn=cfg.sync_bn, deterministic=cfg.deterministic)
        self.device, self.info = device, info = session.device, session.dist
        run_path = claim_run_dir(cfg.run_dir or cfg.default_run_dir(), info, resume=resume)
        self.data = data = data if data is not None else load_data(cfg)
        self.tset = get_transform_set(cfg.transform_name)
        self.tset.check_input(data.channels, data.image_size, data.image_size)
        self.M = M = self.tset.M

        seed_everything(cfg.seed)
        self.model = model_for_config(cfg, data.num_classes, M, data.channels, data.image_size)
        self.model.to(device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
        if cfg.sync_bn:
            self.model = convert_sync_bn(self.model, info, device)
        self.optimizer = build_sgd(self.model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov)
        self.plan = BatchPlan(len(data.train_labels), cfg.batch_size, cfg.seed, epoch_based=cfg.epochs > 0)
        _check_chunks(self.plan, info.world_size * cfg.accumulate, cfg.batch_size)
        self.ddp_model = wrap_ddp(self.model, info, device)  # the training forward
        self.sched = sched = make_schedule(cfg, len(data.train_labels))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda it: sched.lr_factor(it))
        self.weight_at = class_weight_schedule(cfg, data.class_counts, sched.drw_start, device)
        self.margins = ldam_margins(data.class_counts, cfg.ldam_max_margin).to(device) * cfg.ldam_scale \
            if cfg.loss == "ldam" else None
        self.train_aug, self.preprocess = preprocessors(cfg, data.image_size, data.channels, data.train_images)
        self.amp_dtype = amp_dtype(cfg.amp, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.chunked_step = ChunkedStep(self.model, self.ddp_model, self.optimizer, self.scaler, info, cfg.seed,
                                        _DROPOUT_STREAM)
        self.train_images = data.train_images.to(device)
        self.train_labels = data.train_labels.to(device)
        self.data_info = {
            "num_classes": data.num_classes, "M": M, "channels": data.channels, "image_size": data.image_size,
            "class_names": data.class_names, "class_counts": data.class_counts, "mode": cfg.mode,
            "transforms": self.tset.name, "mean": list(self.preprocess.config.mean or ()),
            "std": list(self.preprocess.config.std or ()), "train_size": len(data.train_labels),
            "val_size": len(data.val_labels), "total_iterations": sched.total,
            "iterations_per_epoch": sched.iterations_per_epoch, "dataset": cfg.dataset,
        }
        self.primary = reported("supervised", cfg.mode)
        self.val_episodes = self._episode_validation() if cfg.val_episodes else None
        self.run = RunDir(run_path, enabled=info.is_main)
        self.start, self.best, self.meter = 0, {"score": -math.inf, "iteration": 0}, _new_meter(device)
        if resume:
            self._load_state()
        else:  # a fresh start: a dead run's metrics rows in this directory are dropped
            self.run.start_fresh()
            self.run.write_json("config.json", cfg)

    # -- checkpoints ------------------------------------------------------------------------
    def _load_state(self) -> None:
        state = read_checkpoint(self.run.last, map_location=self.device)
        saved, data = state["data"], self.data
        if (saved.get("class_counts"), saved.get("M")) != (data.class_counts, self.M):
            raise ConfigError(
                f"cannot resume {self.run.path}: its training set had class counts {saved.get('class_counts')} and "
                f"M={saved.get('M')}, the data given now {data.class_counts} and M={self.M}; resume with the run's "
                "dataset and options"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.start, self.best, self.meter = state["iteration"], state["best"], state["meter"]
        start = self.start
        self.run.truncate_metrics(lambda r: r.get("step", 0) <= start and not r.get("final"))

    def checkpoint(self, it: int, is_best: bool) -> None:
        if self.info.is_main:
            check_finite_weights(it, self.model.state_dict())  # never a non-finite checkpoint
            self.run.save(make_checkpoint(
                "supervised", dataclasses.asdict(self.cfg), self.data_info, self.model.state_dict(),
                optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(), iteration=it, best=self.best, meter=self.meter, rng=get_rng_state(),
            ), best=is_best)

    # -- training ---------------------------------------------------------------------------
    def _chunk_loss(self, payload: tuple[int, torch.Tensor, int], chunk: int):
        """Loss (this chunk's share of the global mean, times the world size: DDP averages) and
        the chunk's share of every loss part, plus its correct count."""
        cfg, M = self.cfg, self.M
        it, part, n_global = payload
        n_chunks = self.info.world_size * cfg.accumulate
        idx = part.to(self.device)
        keys = (cfg.seed, _AUGMENT_STREAM, it) + ((n_chunks, chunk) if n_chunks > 1 else ())
        x = self.train_aug(self.train_images[idx], generator=seeded_generator(*keys))
        y = self.train_labels[idx]
        xt = self.tset(x)
        if cfg.channels_last:
            xt = xt.contiguous(memory_format=torch.channels_last)
        share = idx.numel() / n_global
        with autocast(self.device, self.amp_dtype):
            out = self.ddp_model(xt)
        out = {k: v.float() for k, v in out.items()}
        parts = supervised_loss(cfg.mode, out, y, M, weight=self.weight_at(it), margin=self.margins,
                                joint_loss=cfg.joint_loss, large_loss=cfg.large_loss, temperature=cfg.sd_temperature,
                                sd_beta=cfg.sd_beta, distill=it >= self.sched.sd_start)
        with torch.no_grad():
            values = {("loss" if k == "total" else f"loss_{k}"): v.detach() * share for k, v in parts.items()}
            values["correct"] = (_train_primary_logits(cfg.mode, out, M).argmax(-1) == y).sum()
        return parts["total"] * (share * self.info.world_size), values

    def train_step(self, it: int) -> float:
        """Iteration ``it``: one optimiser step; adds its numbers to the meter; returns the lr used."""
        global_batch = self.plan.global_batch(it)
        n_global = global_batch.numel()
        chunks = batch_chunks(global_batch, self.info.rank, self.info.world_size, self.cfg.accumulate)
        totals = self.chunked_step(it, [(c, (it, part, n_global)) for c, part in chunks], self._chunk_loss)
        lr_used = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        with torch.no_grad():  # the step's numbers over every rank's share
            meter = self.meter
            meter["steps"] += 1
            for k, v in totals.items():
                if k == "correct":
                    meter["correct"] += v
                else:
                    meter["sums"][k] = meter["sums"].get(k, 0.0) + v
            meter["seen"] += n_global
        return lr_used

    def evaluate_split(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        broadcast_module(self.model, self.info)  # every rank evaluates rank 0's weights and statistics
        cfg = self.cfg
        pred = _predict(self.model, images, labels, self.tset, self.preprocess, self.info,
                        batch_size=cfg.eval_batch_size, device=self.device, channels_last=cfg.channels_last,
                        amp=self.amp_dtype)
        counts = self.data.class_counts if cfg.long_tailed else None
        return ev.accuracy_report(pred, self.data.num_classes, counts)

    def epoch_of(self, it: int) -> float:
        return _epoch_of(it, self.sched, len(self.data.train_labels), self.cfg.batch_size)

    def fit(self) -> dict:
        """Train from the current iteration to the end (or ``stop_after``); return the summary."""
        cfg, sched = self.cfg, self.sched
        stop = cfg.stop_after if 0 < cfg.stop_after < sched.total else sched.total
        self.model.train()
        with progress(sched.total, f"{cfg.mode} {cfg.transform_name}", quiet=cfg.quiet or not self.info.is_main,
                      initial=self.start, leave=True) as bar:
            for it in range(self.start, stop):
                lr_used = self.train_step(it)
                done = it + 1
                bar.update(1)
                if done % cfg.log_every == 0:
                    rec = _log_train(self.run, self.meter, done, self.epoch_of(done), lr_used,
                                     time.perf_counter() - self.t_start)
                    bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['acc']:.3f}")
                    self.meter = _new_meter(self.device)
                if done % sched.eval_every == 0 or done == sched.total:
                    self.checkpoint(done, self.validate(done))
        if stop < sched.total:
            self.checkpoint(stop, False)
            msg = (f"stopped after iteration {stop} of {sched.total}; continue with "
                   f"`fewshot-sla supervised --resume {self.run.path}`")
            return {"stopped_at": stop, "total_iterations": sched.total, "run_dir": str(self.run.path), "message": msg}
        return self.finish()

    def _episode_validation(self) -> tuple[Any, Any, Any]:
        """(val split, model solving episodes on this run's backbone, preprocessing) of
        ``--val-episodes``; the episode shape is checked against the split up front."""
        from ..episodes import EpisodeSampler
        from ..meta.batches import load_split, make_preprocess
        from ..meta.model import pretrained_episodic_model

        cfg, pre = self.cfg, self.preprocess.config
        ds = load_split(cfg.dataset, cfg.data_root, cfg.val_split, cfg.image_size, cfg.download, cfg.dataset_options)
        EpisodeSampler(ds.labels, cfg.val_way, cfg.val_shot, cfg.val_query, 1, class_names=list(ds.class_names),
                       option_names=("--val-way", "--val-shot", "--val-query"))
        model, _ = pretrained_episodic_model(cfg, self.model.backbone, self.tset.name, cfg.val_head)
        return ds, model, make_preprocess(cfg.dataset, "none", ds.image_size, pre.mean, pre.std)

    def _validate_episodes(self) -> dict[str, float]:
        """Mean accuracy per inference on ``--val-episodes`` fixed episodes (seed 1) of the val split."""
        from ..meta.evaluate import evaluate_episodes

        cfg = self.cfg
        ds, model, pre = self.val_episodes
        broadcast_module(self.model, self.info)
        accs = evaluate_episodes(model, ds, pre, n_way=cfg.val_way, k_shot=cfg.val_shot, n_query=cfg.val_query,
                                 n_episodes=cfg.val_episodes, seed=1, device=self.device, dist=self.info)
        return {k: float(v.mean()) for k, v in accs.items()}

    def validate(self, done: int) -> bool:
        """Evaluate val (and test when asked), log, and update ``best``; returns whether this
        iteration is the new best (always true without a validation set)."""
        cfg, data, run, best, primary = self.cfg, self.data, self.run, self.best, self.primary
        epoch = self.epoch_of(done)
        if self.val_episodes is not None:  # the few-shot criterion: episodes of novel classes
            accuracy = self._validate_episodes()
            primary = reported("pretrained", cfg.mode)
            score = accuracy[primary]
            is_best = score > best["score"]
            run.log({"kind": "val", "epoch": epoch, "step": done, "reported": primary, "score": score,
                     "best": is_best, "episodes": cfg.val_episodes, **{f"acc_{k}": v for k, v in accuracy.items()}})
            if is_best:
                best.update(score=score, iteration=done, val=accuracy)
        elif len(data.val_labels):
            val = self.evaluate_split(data.val_images, data.val_labels)
            score = val["accuracy"][primary]
            is_best = score > best["score"]
            run.log({"kind": "val", "epoch": epoch, "step": done, "reported": primary, "score": score,
                     "best": is_best, **{f"acc_{k}": v for k, v in val["accuracy"].items()}})
            if is_best:
                best.update(score=score, iteration=done, val=val["accuracy"])
        else:
            is_best = True
            best.update(score=float(done), iteration=done)
        if cfg.eval_test and len(data.test_labels):
            test = self.evaluate_split(data.test_images, data.test_labels)
            trec = {"kind": "test", "epoch": epoch, "step": done,
                    **{f"acc_{k}": v for k, v in test["accuracy"].items()}}
            if "groups" in test:
                trec.update({f"{g}_{primary}": v for g, v in test["groups"][primary].items() if g != "overall"})
            run.log(trec)
        return is_best

    def finish(self) -> dict:
        """Test accuracy of the selected checkpoint (``best.pt``); writes ``summary.json``."""
        cfg, data, info = self.cfg, self.data, self.info
        state = None
        if info.is_main:  # rank 0 reads best.pt; evaluate_split hands its weights to the other ranks
            state = read_checkpoint(self.run.best, map_location=self.device)
            self.model.load_state_dict(state["model"])
        state = broadcast_object(None if state is None else {"iteration": state["iteration"],
                                                             "best": state["best"]}, info)
        # a few-shot benchmark has no test images of its training classes: its test is episodes
        test = self.evaluate_split(data.test_images, data.test_labels) if len(data.test_labels) else None
        entries = ev.table_entries(cfg.mode, cfg.loss, cfg.drw) if test is not None else {}
        summary = {
            "run_dir": str(self.run.path), "dataset": cfg.dataset, "imbalance_ratio": cfg.imbalance_ratio,
            "mode": cfg.mode, "transforms": self.tset.name, "M": self.M, "loss": cfg.loss, "drw": cfg.drw,
            "loss_method": ev.method_name(cfg.loss, cfg.drw), "primary": self.primary,
            "selection": (f"{cfg.val_episodes} validation episodes" if cfg.val_episodes else
                          "validation accuracy of the primary inference" if len(data.val_labels) else
                          "last checkpoint"),
            "best_iteration": state["iteration"], "total_iterations": self.sched.total,
            "train_size": len(data.train_labels), "class_counts": data.class_counts, "val": state["best"].get("val"),
            "test": test, "table": {name: test["accuracy"][inf] for name, inf in entries.items()},
            "elapsed_s": time.perf_counter() - self.t_start,
        }
        if test is not None:
            self.run.log({"kind": "test", "epoch": self.epoch_of(state["iteration"]), "step": state["iteration"],
                          "final": True, **{f"acc_{k}": v for k, v in test["accuracy"].items()}})
        self.run.write_json("summary.json", summary)
        self.run.close()
        if cfg.plot and info.is_main:
            _plot(self.run.path)
        barrier(info)
        return to_jsonable(summary)


def run_training(cfg: SupervisedConfig, *, data: SupervisedData | None = None, resume: bool = False) -> dict:
    """Train (or, with ``resume``, continue) the run ``cfg.run_dir``; return the summary.

    ``data`` replaces loading ``cfg.dataset`` (tests pass tiny in-memory data). A run that
    stops at ``cfg.stop_after`` returns ``{"stopped_at": iteration, ...}`` without a summary.
    """
    return SupervisedTrainer(cfg, data, resume=resume).fit()


def _plot(out_dir: Path) -> None:
    """``curves.png`` with the meta-training side's plotter (same metrics schema); skipped with a
    note when matplotlib is missing."""
    try:
        from ..plots import plot_curves

        plot_curves(out_dir)
    except ImportError as e:
        print(f"note: no curves.png: {e}")
