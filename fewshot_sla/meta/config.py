"""Configuration of meta-training (:class:`MetaTrainConfig`) and episode evaluation (:class:`EvalConfig`),
made of the sections of :mod:`fewshot_sla.sections`. Every option is checked when the config is built (one
line naming the fix); checks that need the data (channels, number of classes) are in :func:`check_against_data`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..config import COMMAND_CONFIGS, ConfigError, list_named_configs, parse_options
from ..inferences import INFERENCES as _INFERENCES
from ..inferences import REPORTED as _REPORTED
from ..optim import OPTIMIZERS
from ..sections import MODES, Data, Device, EpisodeShape, Method, Model, Optim, Run, option, registered
from ..transforms import get_transform_set

LEARNERS: tuple[str, ...] = ("head", "maml", "fomaml", "anil")  # fewshot_sla.meta.gradient's learners

__all__ = ["MODES", "INFERENCES", "REPORTED_INFERENCE", "MetaTrainConfig", "EvalConfig", "parse_options",
           "check_against_data", "check_world_size", "meta_config_names"]

#: inferences of each mode (report order) and the one it reports: the meta rows of :mod:`fewshot_sla.inferences`
INFERENCES: dict[str, tuple[str, ...]] = _INFERENCES["meta"]
REPORTED_INFERENCE: dict[str, str] = _REPORTED["meta"]


def meta_config_names() -> list[str]:
    """Named configs (``fewshot_sla/configs/*.toml``) meant for ``meta-train`` (all but ``supervised_*``)."""
    return [n for n in list_named_configs() if not n.startswith("supervised")]


@COMMAND_CONFIGS.register("meta-train")
@dataclass
class MetaTrainConfig(Run, Device, Optim, Method, Model, Data):
    """Everything a meta-training run needs (saved in every checkpoint). The optimisation defaults are
    MetaOptNet's (Lee et al., CVPR 2019: SGD Nesterov, lr 0.1, momentum 0.9, weight decay 5e-4, x0.06/0.012/
    0.0024 from epochs 20/40/50 of 60 of 1000 steps of 8 episodes); its dataset- and head-specific parts
    (shots, label smoothing, augmentation, DropBlock, ...) are the named configs ``metaoptnet_<head>_<dataset>``.
    """

    train_split: str = option("train", "split used for meta-training")
    test_split: str = option("test", "split of the final test", resume=True)
    test_episodes: int = option(1000, "at the end, test best.pt on this many episodes of --test-split as `fewshot-sla "
                                "eval` does (the --eval-way/--eval-shot/--eval-query shape, seed 0) and write "
                                "RUN/test.json; 0: no test", resume=True, ge=0)
    test_dataset_options: dict[str, Any] = option({}, "dataset options of the final test over --dataset-options "
                                                  "(key=value,..., e.g. rotate_classes=false)", resume=True)
    data_on_device: bool = option(True, "keep the uint8 images on the device")
    # -- head -------------------------------------------------------------------------------
    head: str = option("protonet", "few-shot head: protonet, ridge, svm, r2d2 or one registered in HEADS")
    head_options: dict[str, Any] = option({}, "head options as key=value,... passed to the registered head's "
                                          "constructor (any head, also one you register)")
    protonet_normalize: bool = option(False, "protonet: divide squared distances by the feature size (MetaOptNet)")
    ridge_lambda: float = option(50.0, "ridge/r2d2: regularisation lambda", gt=0)
    svm_c: float = option(0.1, "svm: cost C", gt=0)
    svm_max_iter: int = option(15, "svm: QP solver iterations in training and validation", ge=1)
    learn_scale: bool = option(True, "learnable logit scale (MetaOptNet's; starts at --scale-init)")
    scale_init: float = option(1.0, "initial logit scale(s) (MetaOptNet's: 1.0)", gt=0)
    # -- loss and episodes ------------------------------------------------------------------
    label_smoothing: float = option(0.0, "MetaOptNet label smoothing eps of the training loss", ge=0, lt=1)
    n_way: int = option(5, "classes per training episode", ge=2)
    k_shot: int = option(5, "support images per class in training episodes", ge=1)
    n_query: int = option(6, "query images per class in training episodes", ge=1)
    episodes_per_epoch: int = option(8000, "training episodes per epoch", ge=1)
    tasks_per_batch: int = option(8, "episodes per optimiser step", ge=1)
    eval_way: int = option(5, "classes per validation/test episode", ge=2)
    eval_shot: int = option(5, "support images per class in validation/test episodes", ge=1)
    eval_query: int = option(15, "query images per class in validation/test episodes", ge=1)
    val_seed: int = option(1, "seed of the fixed validation episodes")
    val_every: int = option(1, "validate every this many epochs (and after the last)", ge=1)
    eval_tasks_per_batch: int = option(8, "episodes per forward pass in validation/test", ge=1)
    # -- optimisation -----------------------------------------------------------------------
    optimizer: str = option("sgd", "sgd (MetaOptNet) or adam (Snell et al.'s ProtoNet)", choices=OPTIMIZERS)
    lr_milestones: tuple[int, ...] = option((19, 39, 49), "completed epochs after which the lr factor changes "
                                            "(MetaOptNet's x0.06 from its 1-based epoch 20 on: 19)")
    warmup_epochs: int = option(0, "linear lr warm-up epochs", ge=0)
    # -- gradient-based learners (fewshot_sla.meta.gradient, docs/how-to/maml.md) --------------------
    learner: str = option("head", "head (a few-shot head on the features), maml (second order), fomaml (first "
                          "order), anil (inner loop on the linear classifier only)", choices=LEARNERS)
    inner_lr: float = option(0.4, "maml/fomaml/anil: inner-loop learning rate (Meta-SGD: its initial value)", gt=0)
    inner_steps: int = option(1, "maml/fomaml/anil: inner gradient steps in training", ge=1)
    inner_steps_test: int = option(3, "maml/fomaml/anil: inner gradient steps in validation and test", ge=1)
    first_order: bool = option(False, "maml/anil: first-order meta-gradient (inner gradients detached; fomaml's)")
    meta_sgd: bool = option(False, "maml/fomaml/anil: learn one inner learning rate per adapted weight (Meta-SGD)")
    classifier_init: str = option("learned", "maml/fomaml/anil: the classifier's initial weights: learned (one row "
                                  "per class, Finn et al.; tests need the training ways) or zero (any ways)",
                                  choices=("learned", "zero"))
    task_batching: str = option("auto", "maml/fomaml/anil: a chunk's tasks batched with torch.func.vmap, or loop "
                                "(one task at a time; equal results); auto: vmap on CUDA, loop on the CPU (faster "
                                "there: benchmarks/maml_speed.py)", choices=("auto", "vmap", "loop"))

    @property
    def train_shape(self) -> EpisodeShape:
        return EpisodeShape(self.n_way, self.k_shot, self.n_query)

    @property
    def val_shape(self) -> EpisodeShape:
        """The shape of validation and test episodes."""
        return EpisodeShape(self.eval_way, self.eval_shot, self.eval_query)

    test_shape = val_shape

    @property
    def steps_per_epoch(self) -> int:
        return self.episodes_per_epoch // self.tasks_per_batch

    @property
    def inferences(self) -> tuple[str, ...]:
        return INFERENCES[self.mode]

    @property
    def reported_inference(self) -> str:
        return REPORTED_INFERENCE[self.mode]

    @property
    def M(self) -> int:
        """Transforms per image the mode uses (1 for baseline)."""
        return 1 if self.mode == "baseline" else get_transform_set(self.transforms).M

    def head_kwargs(self) -> dict[str, Any]:
        """Keyword options of ``HEADS.build(self.head, ...)``: a built-in head's own fields, updated
        by ``head_options``."""
        return {"protonet": {"normalize": self.protonet_normalize}, "ridge": {"lambda_reg": self.ridge_lambda},
                "r2d2": {"lambda_reg": self.ridge_lambda},
                "svm": {"C_reg": self.svm_c, "max_iter": self.svm_max_iter}}.get(self.head, {}) | self.head_options

    def run_name(self) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        learner = self.head if self.learner == "head" else self.learner
        return f"{self.dataset}-{self.backbone}-{learner}-{self.mode.replace('+', '')}-{stamp}"

    def check(self) -> None:
        self.head = registered("head", self.head)
        tset = get_transform_set(self.transforms)
        if (self.dataset == "omniglot" and self.dataset_options.get("rotate_classes")
                and self.mode != "baseline" and len(tset.rotations) > 1):
            from ..data.omniglot import ROTATE_CLASSES_CONFLICT

            raise ConfigError(f"--dataset-options rotate_classes=true with --mode {self.mode} --transforms "
                              f"{self.transforms}: {ROTATE_CLASSES_CONFLICT} Drop rotate_classes=true, or train "
                              "--mode baseline")
        check_world_size(self, 1)
        if self.episodes_per_epoch % self.tasks_per_batch:
            raise ConfigError(f"--episodes-per-epoch {self.episodes_per_epoch} is not a multiple of --tasks-per-batch "
                              f"{self.tasks_per_batch}; use e.g. --episodes-per-epoch "
                              f"{max(1, round(self.episodes_per_epoch / self.tasks_per_batch)) * self.tasks_per_batch}")
        self.check_milestones("lr_milestones")
        if self.learner != "head":
            self.check_gradient_learner()

    def check_gradient_learner(self) -> None:
        """What a maml/fomaml/anil learner cannot be combined with, one line each."""
        if self.sync_bn:
            raise ConfigError(f"--learner {self.learner} normalises with each task's own batch statistics; drop "
                              "--sync-bn")
        if self.head != "protonet" or self.head_options:
            raise ConfigError(f"--learner {self.learner} adapts its own classifier in the inner loop and uses no "
                              "few-shot head; drop --head and --head-options (or use --learner head)")
        if self.mode == "sla+sd":
            raise ConfigError(f"--learner {self.learner} supports --mode baseline, da or sla, not sla+sd; "
                              "use --mode sla")


def check_world_size(cfg: MetaTrainConfig, world_size: int) -> None:
    """``tasks_per_batch`` splits into ``world_size * accumulate`` equal chunks (one per process and
    accumulation step), else a one-line :class:`ConfigError` naming the fix."""
    parts = world_size * cfg.accumulate
    if cfg.tasks_per_batch % parts:
        who = f"{world_size} processes x " * (world_size > 1) + f"--accumulate {cfg.accumulate}"
        raise ConfigError(f"--tasks-per-batch {cfg.tasks_per_batch} is not divisible by {who} = {parts}; use a "
                          f"--tasks-per-batch that is a multiple of {parts} (e.g. "
                          f"{max(1, cfg.tasks_per_batch // parts) * parts})")


def check_against_data(cfg: MetaTrainConfig, split: str, channels: int, image_size: int,
                       num_classes: int, role: str = "train") -> None:
    """Checks that need the data: transform set vs channels/size, the ways of ``role``'s episodes
    (``train``: ``n_way``; ``val``/``test``: ``eval_way``) vs classes."""
    if cfg.mode != "baseline":
        try:
            get_transform_set(cfg.transforms).check_input(channels, image_size, image_size)
        except ValueError as e:
            raise ConfigError(f"{cfg.dataset}: {e}") from None
    flag, ways = ("--n-way", cfg.train_shape.way) if role == "train" else ("--eval-way", cfg.val_shape.way)
    if ways > num_classes:
        raise ConfigError(f"{flag} {ways} needs {ways} classes but the {split} split of {cfg.dataset} has "
                          f"{num_classes}; lower {flag} to at most {num_classes}")


@dataclass
class EvalConfig(Device):
    """Options of ``fewshot-sla eval``: episodes are drawn from ``seed``, so every checkpoint
    evaluated with the same options sees the same episodes (paired comparisons)."""

    checkpoint: str = option("", "checkpoint (.pt) or run directory (best.pt) of meta-train or supervised")
    compare: tuple[str, ...] = option((), "more checkpoints on the same episodes (paired differences to --checkpoint)")
    dataset: str = option("", "dataset to evaluate on (default: the checkpoint's; another one is cross-domain: "
                          "its images are converted to the checkpoint's channels, size and normalisation)")
    data_root: str = option("", "dataset folder (default: the one stored in the checkpoint)")
    split: str = option("test", "split to evaluate")
    dataset_options: dict[str, Any] = option({}, "override the checkpoint's dataset options (key=value,...; "
                                             "with another --dataset: that dataset's options)")
    episodes: int = option(1000, "number of episodes", ge=1)
    n_way: int | None = option(None, "ways (default: the checkpoint's eval_way)", ge=2)
    k_shot: int | None = option(None, "shots (default: the checkpoint's eval_shot)", ge=1)
    n_query: int = option(15, "queries per class", ge=1)
    seed: int = option(0, "seed of the episodes")
    inferences: tuple[str, ...] = option((), "inferences to report (default: all the model supports)",
                                         choices=tuple(sorted({i for v in INFERENCES.values() for i in v} | {"plain"})))
    head: str = option("", "head of the episodes (default: the checkpoint's; protonet for supervised ones)")
    head_options: dict[str, Any] = option({}, "options of --head as key=value,... (e.g. lambda_reg=10 for ridge)")
    svm_max_iter: int = option(3, "svm: QP iterations at test time (MetaOptNet's test.py: 3)", ge=1)
    tasks_per_batch: int = option(8, "episodes per forward pass", ge=1)
    support_augment: int = option(0, "K augmented copies of each support image with the checkpoint's training "
                                  "augmentation, replacing it (RFS's n_aug_support_samples: 5); 0: off", ge=0)
    support_recipe: str = option("", "augmentation of --support-augment (default: the checkpoint's training one)",
                                 choices=("", "none", "metaoptnet", "standard", "sla"))
    features: str = option("cached", "cached: each image through the backbone once per view, where the model's "
                           "features do not depend on the episode; per-episode: every episode's images",
                           choices=("cached", "per-episode"))
    cache_mib: float = option(0.0, "cap of the feature cache in MiB, streamed by class above it (0: half the "
                              "available memory)", ge=0)
    cache_dtype: str = option("float32", "dtype of the cached features", choices=("float32", "float16"))
    output: str = option("", "JSON file (default: next to the checkpoint)")
    quiet: bool = option(False, "no progress bar")
    allow_overlap: bool = option(False, "evaluate even when the split shares classes with the checkpoint's "
                                 "training classes (refused otherwise)")

    def check(self) -> None:
        if self.head:
            self.head = registered("head", self.head)
