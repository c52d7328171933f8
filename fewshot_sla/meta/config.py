"""Configuration of meta-training (:class:`MetaTrainConfig`) and episode evaluation
(:class:`EvalConfig`).

The dataclass field defaults are the only defaults; ``meta-train --config NAME`` layers a
named TOML file from ``fewshot_sla/configs/`` over them and explicit options override both
(see :mod:`fewshot_sla.config`). Every option is checked when the dataclass is built
(:meth:`MetaTrainConfig.__post_init__`), so a bad value or combination fails at once with a
one-line :class:`~fewshot_sla.config.ConfigError` naming the fix; checks that need the data
(channels, number of classes) are in :func:`check_against_data`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..config import ConfigError, list_named_configs, parse_options
from ..engine.precision import AMP_MODES
from ..inferences import INFERENCES as _INFERENCES
from ..inferences import REPORTED as _REPORTED
from ..optim import OPTIMIZERS
from ..transforms import get_transform_set, list_transform_sets

__all__ = [
    "MODES",
    "AMP_MODES",
    "AUGMENT_RECIPES",
    "INFERENCES",
    "REPORTED_INFERENCE",
    "RESUME_OVERRIDES",
    "MetaTrainConfig",
    "EvalConfig",
    "parse_options",
    "check_against_data",
    "check_world_size",
    "meta_config_names",
]

#: training modes (see :mod:`fewshot_sla.meta.methods`)
MODES: tuple[str, ...] = ("baseline", "da", "sla", "sla+sd")
AUGMENT_RECIPES: tuple[str, ...] = ("none", "metaoptnet", "standard", "sla")
#: inferences each mode supports, in report order, and the one it reports (and selects best.pt
#: by): the meta rows of the one table in :mod:`fewshot_sla.inferences`
INFERENCES: dict[str, tuple[str, ...]] = _INFERENCES["meta"]
REPORTED_INFERENCE: dict[str, str] = _REPORTED["meta"]
#: options that may differ when a run is resumed (they do not change the numbers, except
#: ``accumulate`` when processes x accumulate changes: BatchNorm sees other chunks)
RESUME_OVERRIDES: tuple[str, ...] = (
    "epochs", "device", "num_threads", "quiet", "data_root", "download", "test_episodes", "dist_timeout",
    "deterministic",
    "accumulate",  # to resume on another number of processes: keep processes x accumulate fixed
)


def meta_config_names() -> list[str]:
    """Named configs (``fewshot_sla/configs/*.toml``) meant for ``meta-train`` (all but ``supervised_*``)."""
    return [n for n in list_named_configs() if not n.startswith("supervised")]


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"--{name.replace('_', '-')} must be one of {', '.join(choices)}, got {value!r}")


def _registered(kind: str, name: str) -> str:
    """``name`` checked against the registry of ``kind`` (asked at validation time, so entries a
    user registers work from the command line and configs); its canonical spelling."""
    if kind == "head":
        from ..heads import HEADS as registry
    else:
        from ..backbones import BACKBONES as registry
    try:
        return registry.canonical(name)
    except ValueError as e:
        raise ConfigError(f"--{kind}: {e}") from None


def _positive(name: str, value: Any, low: int | float = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
        raise ConfigError(f"--{name.replace('_', '-')} must be a number >= {low}, got {value!r}")


def _h(text: str, choices: tuple[str, ...] | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {"help": text}
    if choices is not None:
        md["choices"] = choices
    return md


@dataclass
class MetaTrainConfig:
    """Everything a meta-training run needs; saved in every checkpoint so ``eval`` needs only
    the checkpoint and the data root.

    The optimisation defaults are MetaOptNet's (Lee et al., CVPR 2019: SGD Nesterov, lr 0.1,
    momentum 0.9, weight decay 5e-4, x0.06/0.012/0.0024 from epochs 20/40/50, 60 epochs of
    1000 steps of 8 episodes, 6 training queries); the parts of its recipe that depend on the
    dataset or head (training shots, label smoothing, augmentation, ProtoNet's normalisation by
    D, DropBlock and its ramp) come with the named configs ``metaoptnet_<head>_<dataset>``.
    """

    # -- data -------------------------------------------------------------------------------
    dataset: str = field(default="mini-imagenet", metadata=_h(
        "dataset name (omniglot, mini-imagenet, cifar-fs, fc100, tiered-imagenet, folder, ...)"))
    data_root: str = field(default="data", metadata=_h("folder holding the dataset files"))
    dataset_options: dict[str, Any] = field(default_factory=dict, metadata=_h(
        "loader options as key=value,key=value; omniglot: val_alphabets=N, test_alphabets=N, "
        "rotate_classes=true (rotations as new classes: not with SLA's rotation transforms); folder: "
        "split_file=PATH"))
    image_size: int | None = field(default=None, metadata=_h("resize images to this side (default: the dataset's)"))
    train_split: str = field(default="train", metadata=_h("split used for meta-training"))
    val_split: str = field(default="val", metadata=_h("split used for validation"))
    download: bool = field(default=False, metadata=_h("download missing files where an official URL exists"))
    augment: str = field(default="none", metadata=_h(
        "on-device augmentation of training episodes (metaoptnet: crop+jitter+flip)", AUGMENT_RECIPES))
    # -- model ------------------------------------------------------------------------------
    backbone: str = field(default="resnet12", metadata=_h("feature extractor (resnet12, conv4, resnet18, ...)"))
    backbone_options: dict[str, Any] = field(default_factory=dict, metadata=_h(
        "backbone options as key=value,key=value (e.g. hidden=32 for conv4, avg_pool=true for resnet12)"))
    head_options: dict[str, Any] = field(default_factory=dict, metadata=_h(
        "head options as key=value,key=value, passed to the registered head's constructor (any head, also one "
        "you register)"))
    head: str = field(default="protonet", metadata=_h(
        "few-shot head (base learner): protonet, ridge, svm, r2d2 or one registered in fewshot_sla.heads.HEADS"))
    protonet_normalize: bool = field(default=False, metadata=_h(
        "protonet: divide squared distances by the feature size (MetaOptNet's ProtoNet head)"))
    ridge_lambda: float = field(default=50.0, metadata=_h("ridge/r2d2: regularisation lambda"))
    svm_c: float = field(default=0.1, metadata=_h("svm: cost C"))
    svm_max_iter: int = field(default=15, metadata=_h("svm: QP solver iterations in training and validation"))
    learn_scale: bool = field(default=True, metadata=_h("learnable logit scale (MetaOptNet's; starts at --scale-init)"))
    scale_init: float = field(default=1.0, metadata=_h(
        "initial logit scale(s) (MetaOptNet's: 1.0). Ridge logits are small (std about 0.2 on Omniglot's "
        "SLA episodes), and under Adam at lr 1e-3 a learnable scale moves about lr per step: start a ridge "
        "head near its best scale on validation episodes (10 on Omniglot; benchmarks/logit_scale.py)"))
    # -- method -----------------------------------------------------------------------------
    mode: str = field(default="sla", metadata=_h(
        "baseline: N-way; da: transforms keep the label; sla: NM-way joint labels; "
        "sla+sd: sla plus self-distillation into a single-pass N-way prediction", MODES))
    transforms: str = field(default="rotation", metadata=_h(
        "transform set (ignored by baseline)", tuple(list_transform_sets())))
    label_smoothing: float = field(default=0.0, metadata=_h("MetaOptNet label smoothing eps of the training loss"))
    large_loss: bool = field(default=False, metadata=_h("sla: sum (not mean) the joint loss over transforms"))
    sd_temperature: float = field(default=1.0, metadata=_h("sla+sd: distillation temperature T"))
    sd_beta: float = field(default=1.0, metadata=_h("sla+sd: weight of the distilled head's cross-entropy"))
    sd_start: float = field(default=0.0, metadata=_h(
        "sla+sd: fraction of the run's steps trained without the distillation term (L_SLA + beta CE only), "
        "a warm-up of the joint head that teaches it (0 = distil from the first step)"))
    # -- episodes ---------------------------------------------------------------------------
    n_way: int = field(default=5, metadata=_h("classes per training episode"))
    k_shot: int = field(default=5, metadata=_h("support images per class in training episodes"))
    n_query: int = field(default=6, metadata=_h("query images per class in training episodes"))
    episodes_per_epoch: int = field(default=8000, metadata=_h("training episodes per epoch"))
    tasks_per_batch: int = field(default=8, metadata=_h("episodes per optimiser step"))
    eval_way: int = field(default=5, metadata=_h("classes per validation/test episode"))
    eval_shot: int = field(default=5, metadata=_h("support images per class in validation/test episodes"))
    eval_query: int = field(default=15, metadata=_h("query images per class in validation/test episodes"))
    val_episodes: int = field(default=2000, metadata=_h("fixed validation episodes (0: no validation)"))
    val_seed: int = field(default=1, metadata=_h("seed of the fixed validation episodes"))
    val_every: int = field(default=1, metadata=_h("validate every this many epochs (and after the last)"))
    eval_tasks_per_batch: int = field(default=8, metadata=_h("episodes per forward pass in validation/test"))
    test_split: str = field(default="test", metadata=_h("split of the final test (with --test-episodes)"))
    test_episodes: int = field(default=0, metadata=_h("evaluate best.pt on this many test episodes at the end"))
    # -- optimisation -----------------------------------------------------------------------
    epochs: int = field(default=60, metadata=_h("training epochs"))
    optimizer: str = field(default="sgd", metadata=_h(
        "sgd (MetaOptNet: momentum, Nesterov) or adam (Snell et al.'s ProtoNet, e.g. --lr 1e-3 "
        "--weight-decay 0)", OPTIMIZERS))
    lr: float = field(default=0.1, metadata=_h("base learning rate"))
    momentum: float = field(default=0.9, metadata=_h("SGD momentum"))
    weight_decay: float = field(default=5e-4, metadata=_h("SGD weight decay"))
    nesterov: bool = field(default=True, metadata=_h("Nesterov momentum"))
    lr_milestones: tuple[int, ...] = field(default=(19, 39, 49), metadata=_h(
        "numbers of completed epochs after which the lr factor changes (MetaOptNet's x0.06 from its "
        "1-based epoch 20 on: 19)"))
    lr_factors: tuple[float, ...] = field(default=(1.0, 0.06, 0.012, 0.0024), metadata=_h(
        "lr multipliers before the first milestone and after each (len = milestones + 1)"))
    warmup_epochs: int = field(default=0, metadata=_h("linear lr warm-up epochs"))
    # -- system -----------------------------------------------------------------------------
    seed: int = field(default=0, metadata=_h("seed of initialisation, training episodes and augmentation"))
    device: str = field(default="auto", metadata=_h("auto (CUDA when present), cpu, cuda, cuda:1, ..."))
    amp: str = field(default="none", metadata=_h("mixed precision of the backbone on CUDA", AMP_MODES))
    channels_last: bool = field(default=False, metadata=_h("channels_last memory format"))
    data_on_device: bool = field(default=True, metadata=_h("keep the uint8 images on the device"))
    num_threads: int = field(default=0, metadata=_h(
        "CPU threads of torch (0: torch's default; 1 is often faster on a busy machine)"))
    accumulate: int = field(default=1, metadata=_h(
        "split each step's tasks into this many chunks, one forward/backward each, gradients averaged: "
        "one process with --accumulate K equals K torchrun processes (BatchNorm statistics per chunk)"))
    sync_bn: bool = field(default=False, metadata=_h(
        "under torchrun on CUDA: SyncBatchNorm (statistics over all processes' tasks)"))
    dist_timeout: float = field(default=600.0, metadata=_h(
        "under torchrun: seconds a collective may wait before the job fails (a dead rank ends the job)"))
    deterministic: bool = field(default=False, metadata=_h(
        "CUDA: deterministic kernels only (no cuDNN autotuner), so a resumed run repeats an uninterrupted one "
        "bit for bit (slower); the CPU path is deterministic either way"))
    run_dir: str = field(default="", metadata=_h(
        "run directory (default: RUNS_ROOT/<dataset>-<backbone>-<head>-<mode>-<time>)"))
    runs_root: str = field(default="runs", metadata=_h("parent of auto-named run directories"))
    log_every: int = field(default=100, metadata=_h("steps between metrics.jsonl records"))
    quiet: bool = field(default=False, metadata=_h("no progress bars or epoch lines"))

    #: old option names -> new ones (accepted with a one-line note; see fewshot_sla.config)
    RENAMED: ClassVar[dict[str, str]] = {"out_dir": "runs_root"}

    def __post_init__(self) -> None:
        self.dataset_options = parse_options(self.dataset_options, "dataset_options")
        self.backbone_options = parse_options(self.backbone_options, "backbone_options")
        self.head_options = parse_options(self.head_options, "head_options")
        self.lr_milestones = tuple(int(m) for m in self.lr_milestones)
        self.lr_factors = tuple(float(f) for f in self.lr_factors)
        self.validate()

    # -- derived ----------------------------------------------------------------------------
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
        return {
            "protonet": {"normalize": self.protonet_normalize},
            "ridge": {"lambda_reg": self.ridge_lambda},
            "r2d2": {"lambda_reg": self.ridge_lambda},
            "svm": {"C_reg": self.svm_c, "max_iter": self.svm_max_iter},
        }.get(self.head, {}) | self.head_options

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # -- checks -----------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`ConfigError` (one line, naming the fix) on any invalid option."""
        _choice("mode", self.mode, MODES)
        self.head = _registered("head", self.head)
        self.backbone = _registered("backbone", self.backbone)
        _choice("amp", self.amp, AMP_MODES)
        _choice("augment", self.augment, AUGMENT_RECIPES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        try:
            tset = get_transform_set(self.transforms)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.transforms = tset.name
        if self.mode != "baseline" and tset.M == 1:
            raise ConfigError(
                f"mode {self.mode!r} needs a transform set with more than one transform, got "
                f"--transforms {self.transforms}; use e.g. --transforms rotation, or --mode baseline"
            )
        if (self.dataset == "omniglot" and self.dataset_options.get("rotate_classes")
                and self.mode != "baseline" and len(tset.rotations) > 1):
            from ..data.omniglot import ROTATE_CLASSES_CONFLICT

            raise ConfigError(
                f"--dataset-options rotate_classes=true with --mode {self.mode} --transforms {self.transforms}: "
                f"{ROTATE_CLASSES_CONFLICT} Drop rotate_classes=true, or train "
                "--mode baseline"
            )
        for name in ("n_way", "k_shot", "n_query", "episodes_per_epoch", "tasks_per_batch", "eval_way",
                     "eval_shot", "eval_query", "epochs", "val_every", "eval_tasks_per_batch", "log_every",
                     "svm_max_iter", "accumulate"):
            _positive(name, getattr(self, name), 1)
        _positive("dist_timeout", self.dist_timeout, 1)
        check_world_size(self, 1)
        for name in ("val_episodes", "test_episodes", "warmup_epochs", "ridge_lambda", "svm_c", "lr",
                     "momentum", "weight_decay", "num_threads"):
            _positive(name, getattr(self, name), 0)
        if self.n_way < 2 or self.eval_way < 2:
            raise ConfigError(f"episodes need at least 2 ways, got --n-way {self.n_way} --eval-way {self.eval_way}")
        if self.ridge_lambda <= 0 or self.svm_c <= 0:
            raise ConfigError("--ridge-lambda and --svm-c must be > 0")
        if not (math.isfinite(self.scale_init) and self.scale_init > 0):
            raise ConfigError(f"--scale-init must be a finite number > 0 (the logits' multiplier), "
                              f"got {self.scale_init}")
        if self.episodes_per_epoch % self.tasks_per_batch:
            raise ConfigError(
                f"--episodes-per-epoch {self.episodes_per_epoch} is not a multiple of --tasks-per-batch "
                f"{self.tasks_per_batch}; use e.g. --episodes-per-epoch "
                f"{max(1, round(self.episodes_per_epoch / self.tasks_per_batch)) * self.tasks_per_batch}"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.sd_temperature <= 0 or self.sd_beta < 0:
            raise ConfigError(
                f"--sd-temperature must be > 0 and --sd-beta >= 0, got {self.sd_temperature} and {self.sd_beta}"
            )
        if not 0.0 <= self.sd_start < 1.0:
            raise ConfigError(f"--sd-start must be in [0, 1) (a fraction of the run), got {self.sd_start}")
        if self.sd_start > 0 and self.mode != "sla+sd":
            raise ConfigError(f"--sd-start is the distillation warm-up of --mode sla+sd, not of --mode {self.mode}; "
                              "drop it")
        if len(self.lr_factors) != len(self.lr_milestones) + 1:
            raise ConfigError(
                f"--lr-factors needs one more value than --lr-milestones, got {len(self.lr_factors)} factors "
                f"for {len(self.lr_milestones)} milestones"
            )
        if list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ConfigError(f"--lr-milestones must be increasing, got {list(self.lr_milestones)}")
        if self.image_size is not None:
            _positive("image_size", self.image_size, 1)
        if self.device not in ("auto", "cpu") and not self.device.startswith(("cuda", "mps")):
            raise ConfigError(f"--device must be auto, cpu or cuda[:N], got {self.device!r}")


def check_world_size(cfg: MetaTrainConfig, world_size: int) -> None:
    """``tasks_per_batch`` must split into ``world_size * accumulate`` equal chunks (one per
    process and accumulation step); raise a one-line :class:`ConfigError` naming the fix."""
    parts = world_size * cfg.accumulate
    if cfg.tasks_per_batch % parts:
        who = f"{world_size} processes x --accumulate {cfg.accumulate}" if world_size > 1 else \
            f"--accumulate {cfg.accumulate}"
        raise ConfigError(
            f"--tasks-per-batch {cfg.tasks_per_batch} is not divisible by {who} = {parts}; use a "
            f"--tasks-per-batch that is a multiple of {parts} (e.g. {max(1, cfg.tasks_per_batch // parts) * parts})"
        )


def check_against_data(cfg: MetaTrainConfig, split: str, channels: int, image_size: int,
                       num_classes: int, role: str = "train") -> None:
    """Checks that need the data: transform set vs channels/size, ways vs classes.

    ``role`` is ``train`` (checks ``n_way``) or ``val``/``test`` (checks ``eval_way``).
    """
    if cfg.mode != "baseline":
        try:
            get_transform_set(cfg.transforms).check_input(channels, image_size, image_size)
        except ValueError as e:
            raise ConfigError(f"{cfg.dataset}: {e}") from None
    flag, ways = ("--n-way", cfg.n_way) if role == "train" else ("--eval-way", cfg.eval_way)
    if ways > num_classes:
        raise ConfigError(
            f"{flag} {ways} needs {ways} classes but the {split} split of {cfg.dataset} has {num_classes}; "
            f"lower {flag} to at most {num_classes}"
        )


@dataclass
class EvalConfig:
    """Options of ``fewshot-sla eval``: episodes are drawn from ``seed``, so every checkpoint
    evaluated with the same options sees the same episodes (paired comparisons)."""

    checkpoint: str = field(default="", metadata=_h(
        "checkpoint (.pt) or run directory (uses best.pt) of meta-train or of supervised (its backbone in episodes)"))
    compare: tuple[str, ...] = field(default=(), metadata=_h(
        "more checkpoints evaluated on the same episodes; paired differences against --checkpoint"))
    data_root: str = field(default="", metadata=_h("dataset folder (default: the one stored in the checkpoint)"))
    split: str = field(default="test", metadata=_h("split to evaluate"))
    dataset_options: dict[str, Any] = field(default_factory=dict, metadata=_h(
        "override the checkpoint's dataset options for this evaluation, e.g. rotate_classes=false: a model "
        "meta-trained with Omniglot's rotated classes tested on the plain classes, as the other runs"))
    episodes: int = field(default=1000, metadata=_h("number of episodes"))
    n_way: int | None = field(default=None, metadata=_h("ways (default: the checkpoint's eval_way)"))
    k_shot: int | None = field(default=None, metadata=_h("shots (default: the checkpoint's eval_shot)"))
    n_query: int = field(default=15, metadata=_h("queries per class"))
    seed: int = field(default=0, metadata=_h("seed of the episodes"))
    inferences: tuple[str, ...] = field(default=(), metadata=_h(
        "inferences to report (plain, single, aggregated, distilled; default: all the model supports)"))
    head: str = field(default="", metadata=_h(
        "head that solves the episodes (protonet, ridge, svm, r2d2, logistic, ...): default the checkpoint's own "
        "for meta-train checkpoints, protonet for supervised ones (their backbone's features)"))
    head_options: dict[str, Any] = field(default_factory=dict, metadata=_h(
        "options of --head as key=value,key=value (e.g. lambda_reg=10 for ridge, temperature=2 for a head you "
        "register)"))
    svm_max_iter: int = field(default=3, metadata=_h("svm: QP iterations at test time (MetaOptNet's test.py: 3)"))
    tasks_per_batch: int = field(default=8, metadata=_h("episodes per forward pass"))
    device: str = field(default="auto", metadata=_h("auto, cpu, cuda, cuda:N"))
    amp: str = field(default="none", metadata=_h("mixed precision of the backbone on CUDA", AMP_MODES))
    channels_last: bool = field(default=False, metadata=_h("channels_last memory format"))
    num_threads: int = field(default=0, metadata=_h("CPU threads of torch (0: torch's default)"))
    output: str = field(default="", metadata=_h("JSON file (default: next to the checkpoint)"))
    quiet: bool = field(default=False, metadata=_h("no progress bar"))

    def __post_init__(self) -> None:
        self.compare = tuple(self.compare)
        self.inferences = tuple(self.inferences)
        self.dataset_options = parse_options(self.dataset_options, "dataset_options")
        self.head_options = parse_options(self.head_options, "head_options")
        _choice("amp", self.amp, AMP_MODES)
        for name in ("episodes", "n_query", "svm_max_iter", "tasks_per_batch"):
            _positive(name, getattr(self, name), 1)
        _positive("num_threads", self.num_threads, 0)
        for name in ("n_way", "k_shot"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name), 1)
        if self.n_way is not None and self.n_way < 2:
            raise ConfigError(f"--n-way must be at least 2, got {self.n_way}")
        if self.head:
            self.head = _registered("head", self.head)
        known = sorted({i for v in INFERENCES.values() for i in v} | {"plain"})
        for inf in self.inferences:
            _choice("inferences", inf, tuple(known))
