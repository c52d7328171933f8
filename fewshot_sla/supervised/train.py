"""Training of the supervised pipelines (standard and long-tailed CIFAR, few-shot pretraining).

:func:`run_training` trains a :class:`~.model.SupervisedModel` with the lifecycle of
:class:`~fewshot_sla.engine.Trainer` (run directory, checkpoints, exact resume); ``metrics.jsonl``
has the meta-training schema (``kind`` = train / val / test, ``step`` = iterations done,
``epoch``, ``loss``, ``loss_<part>``, ``acc``, ``acc_<inference>``), and ``curves.png`` is drawn
by ``fewshot_sla.plots.plot_curves``.

The batch of iteration ``i`` (:class:`~.schedule.BatchPlan`) and its augmentation depend only on
``(seed, i)``, so a resumed run draws exactly the batches of an uninterrupted one, and a DDP run
on K processes trains on the batches of one process with ``--accumulate K``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from ..config import ConfigError
from ..distributed import DistInfo, barrier, broadcast_module, broadcast_object
from ..engine import Trainer, Validation, autocast, read_checkpoint, run_sharded
from ..inferences import reported
from ..overlap import training_classes
from ..rundir import to_jsonable
from ..seeding import seeded_generator
from ..transforms import get_transform_set
from . import evaluate as ev
from .config import SupervisedConfig
from .data import SupervisedData, load_data, prepare_data, preprocessors
from .losses import ldam_margins, supervised_loss
from .model import model_for_config
from .schedule import BatchPlan, Schedule, batch_chunks, check_chunks, class_weight_schedule, make_schedule

__all__ = ["SupervisedTrainer", "run_training", "BatchPlan", "Schedule", "batch_chunks", "make_schedule",
           "class_weight_schedule", "SupervisedData", "load_data", "prepare_data"]

_AUGMENT_STREAM, _DROPOUT_STREAM = 2, 3  # streams of derive_seed (schedule.py draws the batches: 1)


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


def _train_primary_logits(mode: str, out: dict[str, torch.Tensor], M: int) -> torch.Tensor:
    if mode == "sla":
        from .. import sla

        return sla.single_logits(out["joint"], M)
    return out["class"][::M]


def _new_meter(device: torch.device) -> dict:
    z = torch.zeros((), device=device)
    return {"steps": 0, "sums": {}, "correct": z.clone(), "seen": z.clone()}


# ---------------------------------------------------------------------------- training
class SupervisedTrainer(Trainer):
    """One supervised run (use :func:`run_training`): :class:`~fewshot_sla.engine.Trainer` with a round
    per ``eval_every`` iterations and the LR stepped every iteration."""

    pipeline, step_key, dropout_stream = "supervised", "iteration", _DROPOUT_STREAM

    def __init__(self, cfg: SupervisedConfig, data: SupervisedData | None = None, resume: bool = False) -> None:
        self.t_start = time.perf_counter()
        self.data = data
        super().__init__(cfg, resume)

    def load_data(self) -> None:
        cfg = self.cfg
        self.data = data = self.data if self.data is not None else load_data(cfg)
        self.tset = get_transform_set(cfg.transforms)
        self.tset.check_input(data.channels, data.image_size, data.image_size)
        self.M = self.tset.M
        self.plan = BatchPlan(len(data.train_labels), cfg.batch_size, cfg.seed, epoch_based=cfg.epochs > 0)
        check_chunks(self.plan, self.dist.world_size * cfg.accumulate, cfg.batch_size)
        self.sched = sched = make_schedule(cfg, len(data.train_labels))
        self.total, self.save_every, self.val_every = sched.total, sched.eval_every, sched.eval_every

    def build_model(self) -> torch.nn.Module:
        return model_for_config(self.cfg, self.data.num_classes, self.M, self.data.channels, self.data.image_size)

    def lr_schedule(self) -> tuple:
        return self.sched.milestones, self.sched.factors, self.sched.warmup, self.sched.warmup_unit

    def setup(self) -> None:
        cfg, data, sched, device = self.cfg, self.data, self.sched, self.device
        self.weight_at = class_weight_schedule(cfg, data.class_counts, sched.drw_start, device)
        self.margins = ldam_margins(data.class_counts, cfg.ldam_max_margin).to(device) * cfg.ldam_scale \
            if cfg.loss == "ldam" else None
        self.train_aug, self.preprocess = preprocessors(cfg, data.image_size, data.channels, data.train_images)
        self.train_images = data.train_images.to(device)
        self.train_labels = data.train_labels.to(device)
        self.data_info = {
            "num_classes": data.num_classes, "M": self.M, "channels": data.channels, "image_size": data.image_size,
            "class_names": data.class_names, "class_counts": data.class_counts, "mode": cfg.mode,
            "transforms": self.tset.name, "mean": list(self.preprocess.config.mean or ()),
            "std": list(self.preprocess.config.std or ()), "train_size": len(data.train_labels),
            "val_size": len(data.val_labels), "total_iterations": sched.total,
            "iterations_per_epoch": sched.iterations_per_epoch, "dataset": cfg.dataset,
            "train_classes": training_classes(cfg.dataset, "train", cfg.dataset_options, data.class_names),
        }
        self.primary = reported("supervised", cfg.mode)
        self.val_episodes = self._episode_validation() if cfg.val_episodes else None
        self.best, self.meter = {"score": -math.inf, "iteration": 0}, _new_meter(device)

    # -- checkpoints ------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"meter": self.meter}

    def load_state(self, ckpt: dict[str, Any]) -> None:
        saved, data = ckpt["data"], self.data
        if (saved.get("class_counts"), saved.get("M")) != (data.class_counts, self.M):
            raise ConfigError(
                f"cannot resume {self.run.path}: its training set had class counts {saved.get('class_counts')} and "
                f"M={saved.get('M')}, the data given now {data.class_counts} and M={self.M}; resume with the run's "
                "dataset and options"
            )
        m = ckpt["meter"]
        self.meter = {"steps": m["steps"], "sums": {k: v.to(self.device) for k, v in m["sums"].items()},
                      "correct": m["correct"].to(self.device), "seen": m["seen"].to(self.device)}

    # -- training ---------------------------------------------------------------------------
    def chunks(self, step: int) -> list[tuple[int, torch.Tensor]]:
        global_batch = self.plan.global_batch(step)
        self.n_global = global_batch.numel()
        return batch_chunks(global_batch, self.dist.rank, self.dist.world_size, self.cfg.accumulate)

    def chunk_loss(self, module: torch.nn.Module, part: torch.Tensor, chunk: int):
        """Loss (this chunk's share of the global mean, times the world size: DDP averages) and
        the chunk's share of every loss part, plus its correct count."""
        cfg, M, it = self.cfg, self.M, self.step
        n_chunks = self.dist.world_size * cfg.accumulate
        idx = part.to(self.device)
        keys = (cfg.seed, _AUGMENT_STREAM, it) + ((n_chunks, chunk) if n_chunks > 1 else ())
        x = self.train_aug(self.train_images[idx], generator=seeded_generator(*keys))
        y = self.train_labels[idx]
        xt = self.tset(x)
        if cfg.channels_last:
            xt = xt.contiguous(memory_format=torch.channels_last)
        share = idx.numel() / self.n_global
        with autocast(self.device, self.amp_dtype):
            out = module(xt)
        out = {k: v.float() for k, v in out.items()}
        parts = supervised_loss(cfg.mode, out, y, M, weight=self.weight_at(it), margin=self.margins,
                                joint_loss=cfg.joint_loss, large_loss=cfg.large_loss, temperature=cfg.sd_temperature,
                                sd_beta=cfg.sd_beta, distill=it >= self.sched.sd_start)
        with torch.no_grad():
            values = {("loss" if k == "total" else f"loss_{k}"): v.detach() * share for k, v in parts.items()}
            values["correct"] = (_train_primary_logits(cfg.mode, out, M).argmax(-1) == y).sum()
        return parts["total"] * (share * self.dist.world_size), values

    def record(self, totals: dict[str, torch.Tensor]) -> None:
        """Add a step's numbers (over every rank's share) to the meter."""
        meter = self.meter
        meter["steps"] += 1
        for k, v in totals.items():
            if k == "correct":
                meter["correct"] += v
            else:
                meter["sums"][k] = meter["sums"].get(k, 0.0) + v
        meter["seen"] += self.n_global

    def train_row(self) -> dict[str, Any]:
        meter, n = self.meter, max(self.meter["steps"], 1)
        row = {"steps": meter["steps"], **{k: float(v) / n for k, v in meter["sums"].items()},
               "acc": float(meter["correct"]) / max(float(meter["seen"]), 1.0)}
        self.meter = _new_meter(self.device)
        return row

    def epoch_of(self, it: int) -> float:
        """Epochs done after ``it`` iterations (fractional; ``it * B / n`` for iteration-based runs)."""
        if self.sched.iterations_per_epoch:
            return it / self.sched.iterations_per_epoch
        return it * self.cfg.batch_size / len(self.data.train_labels)

    # -- validation ---------------------------------------------------------------------------
    def evaluate_split(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        broadcast_module(self.model, self.dist)  # every rank evaluates rank 0's weights and statistics
        cfg = self.cfg
        pred = _predict(self.model, images, labels, self.tset, self.preprocess, self.dist,
                        batch_size=cfg.eval_batch_size, device=self.device, channels_last=cfg.channels_last,
                        amp=self.amp_dtype)
        counts = self.data.class_counts if cfg.long_tailed else None
        return ev.accuracy_report(pred, self.data.num_classes, counts)

    def _episode_validation(self) -> tuple[Any, Any, Any]:
        """(val split, model solving episodes on this run's backbone, preprocessing) of
        ``--val-episodes``; the episode shape is checked against the split up front."""
        from ..episodes import EpisodeSampler
        from ..meta.batches import load_split
        from .model import pretrained_episodic_model

        cfg = self.cfg
        ds = load_split(cfg.dataset, cfg.data_root, cfg.val_split, cfg.image_size, cfg.download, cfg.dataset_options)
        EpisodeSampler(ds.labels, *cfg.val_shape, 1, class_names=list(ds.class_names),
                       option_names=("--val-way", "--val-shot", "--val-query"))
        model, _ = pretrained_episodic_model(cfg, self.model.backbone, self.tset.name, cfg.val_head)
        return ds, model, self.preprocess

    def validate(self) -> Validation | None:
        """Mean accuracy per inference on ``--val-episodes`` fixed episodes (seed 1) of the val split
        (the few-shot criterion: novel classes), else the val split's accuracy; ``None`` without either."""
        cfg = self.cfg
        if self.val_episodes is not None:
            from ..meta.evaluate import evaluate_episodes

            ds, model, pre = self.val_episodes
            broadcast_module(self.model, self.dist)
            accs = evaluate_episodes(model, ds, pre, n_way=cfg.val_way, k_shot=cfg.val_shot, n_query=cfg.val_query,
                                     n_episodes=cfg.val_episodes, seed=1, device=self.device, dist=self.dist)
            accuracy = {k: float(v.mean()) for k, v in accs.items()}
            primary = reported("pretrained", cfg.mode)
            return Validation(primary, accuracy[primary], accuracy,
                              {"episodes": cfg.val_episodes, **{f"acc_{k}": v for k, v in accuracy.items()}})
        if not len(self.data.val_labels):
            return None
        accuracy = self.evaluate_split(self.data.val_images, self.data.val_labels)["accuracy"]
        return Validation(self.primary, accuracy[self.primary], accuracy,
                          {f"acc_{k}": v for k, v in accuracy.items()})

    def best_record(self, val: Validation | None) -> dict[str, Any]:
        if val is None:  # no validation set: the last checkpoint is selected
            return {**self.best, "score": float(self.step), "iteration": self.step}
        return {**self.best, "score": val.score, "iteration": self.step, "val": val.accuracy}

    def after_validation(self) -> None:
        """``--eval-test``: the test split's accuracy at every validation."""
        data, primary = self.data, self.primary
        if self.cfg.eval_test and len(data.test_labels):
            test = self.evaluate_split(data.test_images, data.test_labels)
            row = {"kind": "test", "epoch": self.epoch_of(self.step), "step": self.step,
                   **{f"acc_{k}": v for k, v in test["accuracy"].items()}}
            if "groups" in test:  # by the reported inference of the validation that ran
                primary = reported("pretrained", self.cfg.mode) if self.val_episodes is not None else primary
                row.update({f"{g}_{primary}": v for g, v in test["groups"][primary].items() if g != "overall"})
            self.run.log(row)

    # -- the end ----------------------------------------------------------------------------
    def summary(self) -> dict:
        """Test accuracy of the selected checkpoint (``best.pt``)."""
        cfg, data, info = self.cfg, self.data, self.dist
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
        return summary

    def finish(self) -> dict:
        summary = super().finish()
        if self.cfg.plot and self.dist.is_main:  # curves.png with the meta-training side's plotter
            try:
                from ..plots import plot_curves

                plot_curves(self.run.path)
            except ImportError as e:  # matplotlib missing
                print(f"note: no curves.png: {e}")
        barrier(self.dist)
        return to_jsonable(summary)


def run_training(cfg: SupervisedConfig, *, data: SupervisedData | None = None, resume: bool = False) -> dict:
    """Train (or, with ``resume``, continue) the run ``cfg.run_dir``; return the summary (a run that
    stops at ``cfg.stop_after``: ``{"stopped_at": iteration, ...}``). ``data`` replaces loading ``cfg.dataset``."""
    return SupervisedTrainer(cfg, data, resume=resume).fit()

