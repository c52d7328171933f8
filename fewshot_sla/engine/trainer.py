"""The one training lifecycle of both pipelines: :class:`Trainer`.

``__init__``: session (device, threads, torchrun), run directory, data, seeding, the model placed
(sync-BN, channels_last, amp), optimiser, piecewise LR schedule, grad scaler, the DDP-wrapped
training forward; then ``last.pt`` resumed (every state and the RNG; ``metrics.jsonl`` cut at its
step) or a fresh start. ``fit``: rounds of optimiser steps (one :class:`~.step.ChunkedStep` each,
train rows as they fall due), each ending at a checkpoint with validation when due, best
tracking and atomic ``last.pt``/``best.pt`` (never non-finite). ``finish``: ``summary.json``.
The run directory is locked (:mod:`fewshot_sla.runlock`) from before anything is written there
until ``fit`` returns; SIGINT/SIGTERM during ``fit``'s rounds finish the step, write ``last.pt`` at
it and raise :class:`~.interrupt.RunInterrupted` (:mod:`.interrupt`). A checkpoint written
mid-round resumes exactly: the pipeline's ``state`` holds its running sums, and a round's logging
counts from the round's first step, not the resumed one.

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
from ..distributed import barrier, convert_sync_bn, wrap_ddp
from ..guards import check_finite_weights
from ..optim import build_optimizer, piecewise_scheduler
from ..rundir import RunDir
from ..runlock import RunLock
from ..seeding import get_rng_state, seed_everything, set_rng_state
from ..writable import check_run_dir
from .checkpoint import make_checkpoint, read_checkpoint
from .interrupt import RunInterrupted, StopSignals, interrupted_message
from .precision import amp_dtype
from .progress import progress
from .session import claim_run_dir, start_session
from .step import ChunkedStep

__all__ = ["Trainer", "Validation", "checkpoint_step"]

#: pipeline -> the command that trains (and resumes) it
COMMANDS = {"meta": "meta-train", "supervised": "supervised"}


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
        self.lock = RunLock()  # taken by claim_run_dir (rank 0), released when fit returns
        try:
            self._start(cfg, resume)
        except BaseException:  # a refused start leaves no lock (nor a folder it created and left empty)
            self.lock.release(remove_dir=True)
            raise

    def _start(self, cfg: Any, resume: bool) -> None:
        self.cfg = cfg
        session = start_session(cfg.device, num_threads=cfg.num_threads, dist_timeout=cfg.dist_timeout,
                                sync_bn=cfg.sync_bn, deterministic=cfg.deterministic)
        self.device, self.dist = session.device, session.dist
        self.quiet = cfg.quiet or not self.dist.is_main
        # every rank uses rank 0's (possibly time-stamped) directory name
        run_path = claim_run_dir(cfg.run_dir or cfg.default_run_dir(), self.dist, resume=resume, lock=self.lock)
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
            command = COMMANDS.get(ckpt["pipeline"], ckpt["pipeline"])
            raise ConfigError(f"{self.run.last} was written by `fewshot-sla {command}`; resume it with "
                              f"fewshot-sla {command} --resume {self.run.path}")
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
        """Whether a train row is due after this step of the round ``first`` to ``last`` (every
        ``log_every`` steps, and the last step of the run)."""
        return self.step % self.cfg.log_every == 0 or self.step == self.total

    def fit(self) -> dict[str, Any]:
        """Train from the current step to the end (or ``--stop-after``); return the summary.
        Raises :class:`~.interrupt.RunInterrupted` after SIGINT/SIGTERM (``last.pt`` written)."""
        try:
            with StopSignals() as signals:
                self.train_rounds(signals)
            if self.step < self.total:
                self.save(False)
                return {"stopped_at": self.step, "total_iterations": self.total, "run_dir": str(self.run.path),
                        "message": f"stopped after iteration {self.step} of {self.total}; continue with "
                                   f"`fewshot-sla {COMMANDS.get(self.pipeline, self.pipeline)} --resume "
                                   f"{self.run.path}`"}
            return self.finish()
        finally:
            self.lock.release()

    def stop_signal(self, signals: StopSignals) -> int:
        """The signal that asks the run to stop (0: none); under torchrun the same on every rank
        (one all-reduce of a number per step), so all ranks stop after the same step."""
        received = signals.received or 0
        if self.dist.enabled:
            flag = torch.tensor([received], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            received = int(flag.item())
        return received

    def interrupt(self, signum: int, saved: bool) -> None:
        """Write ``last.pt`` at this step (unless ``saved``), flush the metrics and raise
        :class:`~.interrupt.RunInterrupted`."""
        if not saved:
            self.save(False)
        self.run.close()
        barrier(self.dist)  # no rank exits (torchrun then stops the others) before rank 0 has written last.pt
        raise RunInterrupted(signum, interrupted_message(signum, self.step, self.total,
                                                         COMMANDS.get(self.pipeline, self.pipeline), self.run.path))

    def train_rounds(self, signals: StopSignals) -> None:
        """Rounds of steps, each ending at a checkpoint, until ``self.stop`` (or a signal)."""
        while self.step < self.stop:
            start, t0 = self.step, time.time()
            first = start - start % self.save_every  # the round's first step (a resumed run may start inside it)
            last = min(self.stop, self.total, first + self.save_every)
            self.model.train()
            desc = f"epoch {self.epoch_of(last):g}/{self.epoch_of(self.total):g}"
            with progress(last - first, desc, quiet=self.quiet, initial=start - first) as bar:
                while self.step < last:
                    lr = self.optimizer.param_groups[0]["lr"]
                    self.record(self.train_step())
                    bar.update(1)
                    if self.log_due(first, last):
                        row = self.train_row()
                        self.run.log({"kind": "train", "epoch": self.epoch_of(self.step), "step": self.step,
                                      "lr": lr, **row, "time": round(self.train_time + time.time() - t0, 3)})
                        bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['acc']:.3f}")
                    # a round's last step goes on to its validation and checkpoint (checked below)
                    if self.step < last and (signum := self.stop_signal(signals)):
                        self.train_time += time.time() - t0
                        self.interrupt(signum, saved=False)
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
            if signum := self.stop_signal(signals):  # a signal during validation or saving
                self.interrupt(signum, saved=True)

    def after_validation(self) -> None:
        """Rows to log after each validation (none by default)."""

    def report_round(self, val: Validation | None, is_best: bool, secs: float) -> None:
        """A console line after each checkpoint (none by default)."""

    def finish(self) -> dict[str, Any]:
        summary = self.summary()
        self.run.write_json("summary.json", summary)
        self.run.close()
        return summary
