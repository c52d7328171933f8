"""Meta-training: :class:`MetaTrainer`, the :class:`~fewshot_sla.engine.Trainer` of episodes.

One optimiser step takes ``tasks_per_batch`` episodes of the global training stream
(:func:`~fewshot_sla.meta.batches.episode_indices`), gathers them in one tensor, augments them on
the device and sends every image (and, for da/sla/sla+sd, every transform) through the backbone
in one call (:mod:`fewshot_sla.meta.methods` gives the losses). A round is an epoch: the LR steps
after each one (``lr_milestones`` count completed epochs; MetaOptNet's 1-based epochs 20 / 40 / 50
are milestones 19 / 39 / 49), and after every ``val_every`` epochs (and the last) ``val_episodes``
fixed validation episodes select ``best.pt`` by the mode's reported inference.

Under torchrun with K processes the step's episodes split into ``G = K * accumulate`` chunks
(episode ``i`` in chunk ``i mod G``; rank ``r`` runs chunks ``r, r + K, ...``), so K processes
compute what one process with ``--accumulate K`` computes; ``--resume`` works with any world size.
Run directory: ``config.json``, ``metrics.jsonl`` (``train`` rows: means over the steps since the
previous row; ``val`` rows: accuracy and CI per inference; a final ``test`` row), ``last.pt``, ``best.pt``,
``summary.json`` and, unless ``test_episodes`` is 0, ``test.json``: ``best.pt`` tested as ``fewshot-sla eval``
tests it (:mod:`fewshot_sla.meta.final_test`), after training, on its own seeded episodes (the trained
weights do not depend on it). ``--resume`` of a finished run trains nothing and tests ``best.pt`` again.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError
from ..data.base import DatasetNotFoundError
from ..data.spec import ImageSpec
from ..distributed import barrier, broadcast_module
from ..engine import Trainer, Validation
from ..engine import resume_config as _resume_config
from ..episodes import EpisodeSampler
from ..overlap import listing, shared_classes, source_part, training_classes
from ..seeding import seeded_generator
from .batches import EpisodeDataset, dataset_channels, load_batch, load_split, step_chunks
from .config import MetaTrainConfig, check_against_data, check_world_size
from .cross_domain import resolve_target
from .evaluate import evaluate, evaluate_episodes, format_report, summarize
from .final_test import TEST_FILE, eval_command, final_test_config, result_line
from .methods import EpisodeOutput, LossSettings, run_episodes
from .model import FewShotModel, build_model

__all__ = ["train", "resume_config", "MetaTrainer"]

# streams of derive_seed(seed, stream, step, chunk): augmentation and the global RNG (dropout)
_AUGMENT_STREAM, _DROPOUT_STREAM = 7, 8


class _EpisodeLoss(torch.nn.Module):
    """``batch -> EpisodeOutput`` with the training loss: the module DDP wraps (the whole method runs in it)."""

    def __init__(self, model: FewShotModel, settings: LossSettings) -> None:
        super().__init__()
        self.model, self.settings = model, settings

    def forward(self, batch, distill: bool = True) -> EpisodeOutput:  # noqa: ANN001 - EpisodeBatch
        settings = self.settings if distill else dataclasses.replace(self.settings, sd_distill=False)
        return run_episodes(self.model, batch, loss=settings)


def resume_config(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> MetaTrainConfig:
    """The config of the run in ``run_dir``; only the options marked ``resume`` may change."""
    return _resume_config(MetaTrainConfig, run_dir, overrides)


def _dataset_stats(ds: EpisodeDataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean, std = getattr(ds, "mean", None), getattr(ds, "std", None)
    if mean is None or std is None:
        from ..data.base import channel_stats

        mean, std = channel_stats(ds.images)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


class MetaTrainer(Trainer):
    """One meta-training run (use :func:`train`): :class:`~fewshot_sla.engine.Trainer` with an epoch a round."""

    pipeline, dropout_stream = "meta", _DROPOUT_STREAM

    def __init__(self, cfg: MetaTrainConfig, datasets: dict[str, EpisodeDataset] | None = None,
                 resume: bool = False) -> None:
        self.datasets = dict(datasets or {})
        super().__init__(cfg, resume)

    @property
    def epoch(self) -> int:  # completed epochs
        return self.step // self.cfg.steps_per_epoch

    # -- data and model ---------------------------------------------------------------------
    def _load(self, split: str, options: dict[str, Any] | None = None) -> EpisodeDataset:
        c = self.cfg
        return load_split(c.dataset, c.data_root, split, c.image_size, c.download, {**c.dataset_options,
                                                                                     **(options or {})})

    def load_data(self) -> None:
        cfg, datasets = self.cfg, self.datasets
        check_world_size(cfg, self.dist.world_size)
        if cfg.mode != "baseline" and (ch := dataset_channels(cfg.dataset)) is not None:  # before loading data
            check_against_data(cfg, cfg.train_split, ch, 0, 10**9)
        self.train_ds = datasets.get("train") or self._load(cfg.train_split)
        self.val_ds = (datasets.get("val") or self._load(cfg.val_split)) if cfg.val_episodes else None
        self.test_ds = (datasets.get("test") or self._load_test()) if cfg.test_episodes else None
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
        self.sampler = EpisodeSampler(ds.labels, *cfg.train_shape,
                                      cfg.episodes_per_epoch * cfg.epochs, seed=cfg.seed,
                                      class_names=list(ds.class_names),
                                      option_names=("--n-way", "--k-shot", "--n-query"))
        for held_out in (self.val_ds, self.test_ds):  # checks the episode shape against the data up front
            if held_out is not None:
                EpisodeSampler(held_out.labels, *cfg.val_shape, 1, class_names=list(held_out.class_names),
                               option_names=("--eval-way", "--eval-shot", "--eval-query"))
        if cfg.data_on_device and self.device.type != "cpu":
            self.train_ds = _on_device(self.train_ds, self.device)
            if self.val_ds is not None:
                self.val_ds = _on_device(self.val_ds, self.device)
        self.data_info = {"channels": ds.channels, "image_size": ds.image_size, "mean": self.mean,
                          "std": self.std, "dataset": cfg.dataset,
                          "train_classes": training_classes(cfg.dataset, cfg.train_split, cfg.dataset_options,
                                                            ds.class_names, getattr(ds, "meta", None))}
        if self.test_ds is not None:
            self.check_test_split()
        # one round per epoch; the LR steps after each epoch; validation every val_every epochs
        spe = cfg.steps_per_epoch
        self.total, self.save_every, self.lr_every = cfg.epochs * spe, spe, spe
        self.val_every = spe * (cfg.val_every if self.val_ds is not None else 1)

    def _load_test(self) -> EpisodeDataset:
        cfg = self.cfg
        try:
            return self._load(cfg.test_split, cfg.test_dataset_options)
        except (FileNotFoundError, ValueError) as e:  # missing files, or a split the data does not have
            why = f"{e}; the final test reads --test-split {cfg.test_split}: pass --test-episodes 0 to train without it"
            raise (DatasetNotFoundError if isinstance(e, FileNotFoundError) else ConfigError)(why) from None

    def check_test_split(self) -> None:
        """What ``fewshot-sla eval`` would refuse at the end of the run, refused before it starts: test
        images of another size than the training ones, or test classes the run trains on."""
        cfg, ds, t = self.cfg, self.train_ds, self.test_ds
        check_against_data(cfg, cfg.test_split, t.channels, t.image_size, len(t.class_names), "test")
        if (t.channels, t.image_size) != (ds.channels, ds.image_size):
            raise ConfigError(f"test images are {t.channels}x{t.image_size}px but training images "
                              f"{ds.channels}x{ds.image_size}px; set --image-size, or --test-episodes 0")
        part = source_part(cfg.dataset, cfg.test_split, {**cfg.dataset_options, **cfg.test_dataset_options},
                           getattr(t, "meta", None))
        shared, total = shared_classes(self.data_info["train_classes"], cfg.dataset, list(t.class_names), part)
        if shared:
            raise ConfigError(f"--test-split {cfg.test_split} shares {len(shared)} of its {total} classes with the "
                              f"training classes ({listing(shared)}); pass a "
                              "split the run does not train on as --test-split, or --test-episodes 0")

    def build_model(self) -> FewShotModel:
        return build_model(self.cfg, self.train_ds.channels, self.train_ds.image_size)

    def lr_schedule(self) -> tuple:
        return self.cfg.lr_milestones, self.cfg.lr_factors, self.cfg.warmup_epochs, 1

    def setup(self) -> None:
        cfg, size = self.cfg, self.train_ds.image_size
        self.model.amp_dtype, self.model.channels_last = self.amp_dtype, cfg.channels_last
        spec = ImageSpec(self.train_ds.channels, size, self.mean, self.std)
        self.train_pre, self.eval_pre = spec.augmentation(cfg.augment), spec.normalise
        self.loss_settings = LossSettings(cfg.label_smoothing, cfg.large_loss, cfg.sd_temperature, cfg.sd_beta)
        # sla+sd --sd-start: the first step whose loss includes the distillation term
        self.sd_start_step = math.floor(cfg.sd_start * cfg.epochs * cfg.steps_per_epoch + 0.5)
        self.best: dict[str, Any] = {"score": -math.inf, "epoch": None, "step": None, "val": None}
        self.last_val: dict[str, Any] | None = None
        # sums of the step means since the last train row, and over the epoch
        self.window, self.n_window, self.epoch_sums = defaultdict(float), 0, defaultdict(float)

    def train_module(self) -> torch.nn.Module:
        return _EpisodeLoss(self.model, self.loss_settings)

    # -- checkpoints ------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        # mid-epoch (a signal): the sums since the last train row and over the epoch, for an exact resume
        mid = self.step % self.cfg.steps_per_epoch != 0
        return {"epoch": self.epoch, "last_val": self.last_val, "train_time": self.train_time,
                "world_size": self.dist.world_size, "window": dict(self.window) if mid else {},
                "n_window": self.n_window if mid else 0, "epoch_sums": dict(self.epoch_sums) if mid else {}}

    def load_state(self, ckpt: dict[str, Any]) -> None:
        self.last_val = ckpt["last_val"]
        self.window = defaultdict(float, ckpt.get("window", {}))
        self.n_window = int(ckpt.get("n_window", 0))
        self.epoch_sums = defaultdict(float, ckpt.get("epoch_sums", {}))

    # -- training ---------------------------------------------------------------------------
    def chunks(self, step: int) -> list[tuple[int, list[int]]]:
        cfg, dist = self.cfg, self.dist
        parts = step_chunks(step, cfg.tasks_per_batch, dist.rank, dist.world_size, cfg.accumulate)
        # chunk a of this rank is global chunk rank + a * world_size (the same on any world size)
        return [(dist.rank + a * dist.world_size, idx) for a, idx in enumerate(parts)]

    def chunk_loss(self, module: torch.nn.Module, indices: list[int], chunk: int):
        """Loss (scaled for gradient accumulation) and logged values of one chunk of episodes."""
        cfg = self.cfg
        gen = seeded_generator(cfg.seed, _AUGMENT_STREAM, self.step, chunk)
        batch = load_batch(self.train_ds, self.sampler, indices, self.device, self.train_pre, gen)
        out: EpisodeOutput = module(batch, distill=self.step >= self.sd_start_step)
        vals = {"loss": out.loss.detach(), "acc": out.objective_acc.mean()}
        vals.update({f"loss_{k}": v for k, v in out.parts.items()})
        vals.update({f"acc_{k}": (v.argmax(-1) == out.labels).float().mean() for k, v in out.logits.items()})
        return out.loss / cfg.accumulate, vals

    def record(self, sums: dict[str, torch.Tensor]) -> None:
        # chunks hold equal numbers of episodes, so the mean over chunks is the step's mean
        means = torch.stack(list(sums.values())) / (self.cfg.accumulate * self.dist.world_size)
        for k, v in zip(sums, means.tolist()):  # one device sync per step
            self.window[k] += v
            self.epoch_sums[k] += v
        self.n_window += 1

    def train_row(self) -> dict[str, Any]:
        row = {"steps": self.n_window, **{k: v / self.n_window for k, v in self.window.items()}}
        self.window, self.n_window = defaultdict(float), 0
        return row

    def log_due(self, first: int, last: int) -> bool:  # log_every counts the steps of an epoch
        return (self.step - first) % self.cfg.log_every == 0 or self.step == last

    def epoch_of(self, step: int) -> int:
        return -(-step // self.cfg.steps_per_epoch)

    def validate(self) -> Validation | None:
        if self.val_ds is None:
            return None
        cfg = self.cfg
        broadcast_module(self.model, self.dist)  # every rank evaluates rank 0's weights and statistics
        val = self._episodes(self.model, self.val_ds, cfg.val_episodes, cfg.val_seed, "validation")
        self.last_val = {"epoch": self.epoch, "val": val}
        fields = {f"{name}_{k}": r[key] for k, r in val.items() for name, key in (("acc", "mean"), ("ci95", "ci95"))}
        return Validation(cfg.reported_inference, val[cfg.reported_inference]["mean"], val, fields)

    def _episodes(self, model: FewShotModel, ds: EpisodeDataset, n: int, seed: int, desc: str) -> dict[str, Any]:
        """Mean accuracy and CI per inference on ``n`` fixed ``eval_*``-shaped episodes (seed ``seed``)."""
        c = self.cfg
        accs = evaluate_episodes(model, ds, self.eval_pre, n_way=c.eval_way, k_shot=c.eval_shot, n_query=c.eval_query,
                                 n_episodes=n, seed=seed, device=self.device, tasks_per_batch=c.eval_tasks_per_batch,
                                 quiet=self.quiet, desc=desc, dist=self.dist)
        return summarize(accs, with_values=False)

    def best_record(self, val: Validation | None) -> dict[str, Any]:
        score, accuracy = (None, None) if val is None else (val.score, val.accuracy)
        return {"score": score, "epoch": self.epoch, "step": self.step, "val": accuracy}

    def report_round(self, val: Validation | None, is_best: bool, secs: float) -> None:
        cfg, reported = self.cfg, self.cfg.reported_inference
        stats = {k: v / cfg.steps_per_epoch for k, v in self.epoch_sums.items()}
        self.epoch_sums = defaultdict(float)
        if self.quiet:
            return
        line = f"epoch {self.epoch}/{cfg.epochs}  loss {stats['loss']:.4f}  acc {100 * stats['acc']:.2f}%"
        if val is not None:
            r = val.accuracy[reported]
            line += f"  | val {reported} {100 * r['mean']:.2f} +- {100 * r['ci95']:.2f}%"
            others = [f"{k} {100 * v['mean']:.2f}" for k, v in val.accuracy.items() if k != reported]
            if others:
                line += f" ({', '.join(others)})"
            line += " *best" if is_best else f" (best {100 * self.best['score']:.2f} @{self.best['epoch']})"
        print(line + f"  | next lr {self.optimizer.param_groups[0]['lr']:.4g}  {secs:.1f}s", flush=True)

    # -- the end ----------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        test = self.test() if self.cfg.test_episodes else None
        extra = {} if test is None else {
            "test": {k: {s: v for s, v in r.items() if s != "accuracies"}
                     for k, r in test["models"][0]["results"].items()},
            "test_report": test["output"], "test_line": result_line(test)}
        return {"run_dir": str(self.run.path), "mode": self.cfg.mode, "reported_inference": self.cfg.reported_inference,
                "epochs": self.epoch, "steps": self.step, "train_time_s": round(self.train_time, 3),
                "best": self.best, "last": self.last_val, **extra}

    def finish(self) -> dict[str, Any]:
        summary = super().finish()
        if not self.quiet and self.best.get("score") not in (None, -math.inf):
            print(f"best val {self.cfg.reported_inference} {100 * self.best['score']:.2f}% at epoch "
                  f"{self.best['epoch']}; run directory {self.run.path}", flush=True)
        return summary

    def test(self) -> dict[str, Any]:
        """``best.pt`` evaluated by ``fewshot-sla eval`` (:mod:`.final_test`): ``RUN/test.json``, its report;
        a ``test`` row (``final``) in ``metrics.jsonl``."""
        cfg = self.cfg
        barrier(self.dist)  # rank 0 has written best.pt
        ecfg = final_test_config(cfg, self.run.best, self.run.path / TEST_FILE, self.quiet)
        key = resolve_target("", "", ecfg.dataset_options, cfg).key(ecfg.split)
        datasets = {} if self.test_ds is None else {key: self.test_ds}
        show = None if self.quiet else (lambda report: print(format_report(report), flush=True))
        report = evaluate(ecfg, datasets, show=show, extra={"command": eval_command(ecfg)})
        results = report["models"][0]["results"]
        self.run.log({"kind": "test", "epoch": report["models"][0]["epoch"], "step": report["models"][0]["step"],
                      "final": True, "episodes": ecfg.episodes,
                      **{f"{name}_{k}": r[stat] for k, r in results.items()
                         for name, stat in (("acc", "mean"), ("ci95", "ci95"))}})
        return report


def _on_device(ds: EpisodeDataset, device: torch.device) -> EpisodeDataset:
    if hasattr(ds, "to"):
        return ds.to(device)
    return dataclasses.replace(ds, images=ds.images.to(device))


def train(cfg: MetaTrainConfig, datasets: dict[str, EpisodeDataset] | None = None,
          resume: bool = False) -> dict[str, Any]:
    """Meta-train as ``cfg`` says (``resume``: continue ``cfg.run_dir``); return the summary.

    ``datasets``: already loaded ``{"train", "val", "test"}`` datasets (``images`` uint8 ``[N, C, H, W]``,
    ``labels``, ``class_names``, ``image_size``, ``channels``); missing ones are loaded.
    """
    return MetaTrainer(cfg, datasets, resume=resume).fit()
