"""The one training lifecycle of both pipelines: :class:`Trainer`.

``__init__``: session (device, threads, torchrun), run directory, data, seeding, the model placed
(sync-BN, channels_last, amp), optimiser, piecewise LR schedule, grad scaler, the DDP-wrapped
training forward; then ``last.pt`` resumed (every state and the RNG; ``metrics.jsonl`` cut at its
step) or a fresh start. ``fit``: rounds of optimiser steps (one :class:`~.step.ChunkedStep` each,
train rows as they fall due), each ending at a checkpoint with validation when due, best
tracking and atomic ``last.pt``/``best.pt`` (never non-finite). ``finish``: ``summary.json``.

A pipeline subclass supplies what differs: ``load_data`` (setting ``total``, ``save_every``,
``val_every``, ``lr_every`` in steps), ``build_model``, ``lr_schedule``,
``setup``, ``chunks(step)``, ``chunk_loss(module, payload, chunk)``, ``record``/``train_row``,
``epoch_of``, ``validate``, ``best_record``, ``state``/``load_state`` (its part of the
checkpoint), ``data_info`` (the checkpoint's ``data``) and ``summary``.

A learner that adapts weights per task inside a step (MAML) plugs in as the training forward:
``train_module()`` returns a module whose ``forward`` takes a chunk's episodes and, per task,
runs the inner loop on ``torch.func.functional_call(model, params, x)`` with gradients taken
with ``create_graph=True`` (or ``torch.func.grad``), returning the query loss of the adapted
weights; ``chunk_loss`` calls that module. DDP wraps it, so the outer gradient is all-reduced
once per step, and the chunk seeding, frozen BatchNorm statistics and guards apply unchanged.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from ..config import ConfigError
from ..distributed import convert_sync_bn, wrap_ddp
from ..guards import check_finite_weights
from ..optim import build_optimizer, piecewise_scheduler
from ..rundir import RunDir
from ..seeding import get_rng_state, seed_everything, set_rng_state
from ..writable import check_run_dir
from .checkpoint import make_checkpoint, read_checkpoint
from .precision import amp_dtype
from .progress import progress
from .session import claim_run_dir, start_session
from .step import ChunkedStep

__all__ = ["Trainer", "Validation", "checkpoint_step"]


def checkpoint_step(ckpt: dict[str, Any]) -> int:
    """Optimiser steps done when ``ckpt`` was written: ``step`` (meta-train) or ``iteration`` (supervised)."""
    return int(ckpt["step"] if "step" in ckpt else ckpt["iteration"])


@dataclasses.dataclass
class Validation:
    """A validation's score (of the ``reported`` inference), the accuracies kept with the best
    score, and the other fields of its ``val`` row."""

    reported: str
    score: float
    accuracy: dict[str, Any]
    fields: dict[str, Any]


class Trainer:
    """One training run; a subclass sets ``pipeline`` (the checkpoint's), ``step_key`` (the
    checkpoint's name for the step count) and ``dropout_stream`` (see the module docs)."""

    pipeline: str
    step_key = "step"
    dropout_stream: int
    lr_every = 1  # optimiser steps per LR-scheduler step

    def __init__(self, cfg: Any, resume: bool = False) -> None:
        self.cfg = cfg
        session = start_session(cfg.device, num_threads=cfg.num_threads, dist_timeout=cfg.dist_timeout,
                                sync_bn=cfg.sync_bn, deterministic=cfg.deterministic)
        self.device, self.dist = session.device, session.dist
        self.quiet = cfg.quiet or not self.dist.is_main
        # every rank uses rank 0's (possibly time-stamped) directory name
        run_path = claim_run_dir(cfg.run_dir or cfg.default_run_dir(), self.dist, resume=resume)
        if not cfg.run_dir:  # the resolved config names its run directory
            self.cfg = cfg = dataclasses.replace(cfg, run_dir=str(run_path))
        if self.dist.is_main:  # an unwritable run folder is one line, before any data is loaded
            check_run_dir(run_path, resume)
        self.load_data()
        stop_after = getattr(cfg, "stop_after", 0)
        self.stop = stop_after if 0 < stop_after < self.total else self.total

        seed_everything(cfg.seed)  # before the model's initialisation
        self.model = self.build_model().to(self.device)
        if cfg.sync_bn:
            self.model = convert_sync_bn(self.model, self.dist, self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.amp_dtype = amp_dtype(cfg.amp, self.device)
        self.optimizer = build_optimizer(getattr(cfg, "optimizer", "sgd"), self.model.parameters(), cfg.lr,
                                         cfg.momentum, cfg.weight_decay, cfg.nesterov)
        self.scheduler = piecewise_scheduler(self.optimizer, *self.lr_schedule())
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.setup()
        # the training forward: DDP(train_module) under torchrun, the plain module otherwise
        self.step_module = wrap_ddp(self.train_module(), self.dist, self.device)
        self.chunked_step = ChunkedStep(self.model, self.step_module, self.optimizer, self.scaler, self.dist,
                                        cfg.seed, self.dropout_stream)
        self.step, self.train_time = 0, 0.0  # optimiser steps done; seconds spent training

        self.run = RunDir(run_path, enabled=self.dist.is_main)
        if resume:
            self.restore()
        else:  # a fresh start: a dead run's metrics rows in this directory are dropped
            self.run.start_fresh()
        self.run.write_json("config.json", dataclasses.asdict(cfg))

    def train_module(self) -> torch.nn.Module:
        """The module a step's forward runs (and DDP wraps)."""
        return self.model

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, is_best: bool) -> None:
        """``last.pt`` (and ``best.pt``), written by rank 0; never with non-finite weights."""
        if self.dist.is_main:
            check_finite_weights(self.step, self.model.state_dict())
            self.run.save(make_checkpoint(
                self.pipeline, dataclasses.asdict(self.cfg), self.data_info, self.model.state_dict(),
                optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(), **{self.step_key: self.step}, best=self.best, **self.state(),
                rng=get_rng_state(),
            ), best=is_best)

    def restore(self) -> None:
        ckpt = read_checkpoint(self.run.last, map_location="cpu")
        if ckpt["pipeline"] != self.pipeline:
            raise ConfigError(f"{self.run.last} was written by `fewshot-sla {ckpt['pipeline']}`; resume it with "
                              f"fewshot-sla {ckpt['pipeline']} --resume {self.run.path}")
        self.load_state(ckpt)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step, self.best = checkpoint_step(ckpt), ckpt["best"]
        self.train_time = float(ckpt.get("train_time", 0.0))
        set_rng_state(ckpt["rng"])
        step = self.step
        self.run.truncate_metrics(lambda r: r.get("step", 0) <= step and not r.get("final"))

    # -- training ----------------------------------------------------------------------------
    def train_step(self) -> dict[str, torch.Tensor]:
        """Optimiser step ``self.step``; returns the chunks' values summed over chunks and ranks."""
        sums = self.chunked_step(self.step, self.chunks(self.step),
                                 lambda payload, chunk: self.chunk_loss(self.step_module, payload, chunk))
        self.step += 1
        if self.step % self.lr_every == 0:
            self.scheduler.step()
        return sums

    def log_due(self, first: int, last: int) -> bool:
        """Whether a train row is due after this step of the round ``first`` to ``last``."""
        return self.step % self.cfg.log_every == 0

    def fit(self) -> dict[str, Any]:
        """Train from the current step to the end (or ``--stop-after``); return the summary."""
        while self.step < self.stop:
            first, t0 = self.step, time.time()
            last = min(self.stop, self.total, (first // self.save_every + 1) * self.save_every)
            self.model.train()
            desc = f"epoch {self.epoch_of(last):g}/{self.epoch_of(self.total):g}"
            with progress(last - first, desc, quiet=self.quiet) as bar:
                while self.step < last:
                    lr = self.optimizer.param_groups[0]["lr"]
                    self.record(self.train_step())
                    bar.update(1)
                    if self.log_due(first, last):
                        row = self.train_row()
                        self.run.log({"kind": "train", "epoch": self.epoch_of(self.step), "step": self.step,
                                      "lr": lr, **row, "time": round(self.train_time + time.time() - t0, 3)})
                        bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['acc']:.3f}")
            self.train_time += time.time() - t0
            if self.step % self.save_every and self.step < self.total:
                break  # --stop-after between two checkpoints
            val, is_best = None, False
            if self.step % self.val_every == 0 or self.step == self.total:
                val = self.validate()  # None without a validation set: the latest weights are the best
                is_best = val is None or val.score > self.best["score"]
                if val is not None:
                    self.run.log({"kind": "val", "epoch": self.epoch_of(self.step), "step": self.step,
                                  "reported": val.reported, "score": val.score, "best": is_best, **val.fields})
                if is_best:
                    self.best = self.best_record(val)
                self.after_validation()
            self.save(is_best)
            self.report_round(val, is_best, time.time() - t0)
        if self.step < self.total:
            self.save(False)
            return {"stopped_at": self.step, "total_iterations": self.total, "run_dir": str(self.run.path),
                    "message": f"stopped after iteration {self.step} of {self.total}; continue with "
                               f"`fewshot-sla {self.pipeline} --resume {self.run.path}`"}
        return self.finish()

    def after_validation(self) -> None:
        """Rows to log after each validation (none by default)."""

    def report_round(self, val: Validation | None, is_best: bool, secs: float) -> None:
        """A console line after each checkpoint (none by default)."""

    def finish(self) -> dict[str, Any]:
        summary = self.summary()
        self.run.write_json("summary.json", summary)
        self.run.close()
        return summary
