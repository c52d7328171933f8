"""The sections both pipelines' run configs are made of, and the one way to declare and check an option.

A config class inherits sections (``class MetaTrainConfig(Run, Device, Optim, Method, Model, Data)``)
so its fields stay flat: one ``--option``, TOML key and ``config.json`` key per field. Each
section checks its own fields in ``check``; :class:`Options` runs every ``check`` of the class's
bases, base sections first. A field is declared with :func:`option`; ``resume=True`` marks the
options ``--resume`` may change (:func:`fewshot_sla.config.resume_options`). Old spellings of options are in the one
table :data:`RENAMED` (accepted with a one-line note, see :func:`fewshot_sla.config.renamed_options`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .config import ConfigError, parse_options
from .engine.precision import AMP_MODES, normalize_amp

__all__ = ["MODES", "RENAMED", "EpisodeShape", "Options", "Data", "Model", "Method", "Optim", "Device", "Run",
           "option", "flag", "check_choice", "check_at_least", "check_milestones", "registered"]

#: training modes: baseline (N-way), da (transforms keep the label), sla (NM-way joint labels), sla+sd
MODES: tuple[str, ...] = ("baseline", "da", "sla", "sla+sd")
#: old option names -> new ones (or (new, value converter)), for every config
RENAMED: dict[str, Any] = {
    "out_dir": "run_dir",
    "temperature": "sd_temperature",
    "progress": ("quiet", lambda v: not v),
    "lr_milestones": "lr_milestone_fractions",  # supervised's (meta-train's lr_milestones count epochs)
}


@dataclass(frozen=True)
class EpisodeShape:
    """An N-way K-shot episode with ``query`` query images per class."""

    way: int
    shot: int
    query: int


def option(default: Any, help: str, *, choices: tuple[str, ...] | None = None,  # noqa: A002 - argparse's name
           resume: bool = False) -> Any:
    """A config field: its default, ``--help`` text, ``choices`` and whether ``--resume`` may change it."""
    md: dict[str, Any] = {"help": help, **({"choices": tuple(choices)} if choices else {})}
    if resume:
        md["resume"] = True
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=md)
    return field(default=default, metadata=md)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{flag(name)} must be one of {', '.join(choices)}, got {value!r}")


def check_at_least(cfg: Any, low: float, *names: str) -> None:
    """Each option ``names`` of ``cfg`` is a number >= ``low`` (``None`` = unset is fine)."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < low):
            raise ConfigError(f"{flag(name)} must be a number >= {low}, got {value!r}")


def check_milestones(name: str, milestones: tuple, factors: tuple) -> None:
    """Increasing lr milestones (option ``name``) with one more ``--lr-factors`` value."""
    if list(milestones) != sorted(milestones):
        raise ConfigError(f"{flag(name)} must be increasing, got {list(milestones)}")
    if len(factors) != len(milestones) + 1:
        raise ConfigError(f"--lr-factors needs one more value than {flag(name)}, got {len(factors)} factors for "
                          f"{len(milestones)} milestones")


def registered(kind: str, name: str) -> str:
    """``name`` checked against the registry of ``kind`` (asked when the config is built, so entries
    a user registers work from the command line and configs); its canonical spelling."""
    if kind == "head":
        from .heads import HEADS as registry
    elif kind == "backbone":
        from .backbones import BACKBONES as registry
    else:
        from .data.registry import DATASETS as registry
    try:
        return registry.canonical(name)
    except ValueError as e:
        raise ConfigError(f"--{kind}: {e}") from None


class Options:
    """Base of the run configs: the one table of old spellings; builds run each section's ``check``
    (bases first, the config class's own last), then check every option that has ``choices``."""

    RENAMED: ClassVar[dict[str, Any]] = RENAMED

    def __post_init__(self) -> None:
        for klass in reversed(type(self).__mro__):
            if "check" in vars(klass):
                vars(klass)["check"](self)
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if "choices" in f.metadata:
                check_choice(f.name, getattr(self, f.name), f.metadata["choices"])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass
class Data(Options):
    """The dataset (defaults: meta-train's; a pipeline redeclares a field to change its default)."""

    dataset: str = option("mini-imagenet", "dataset name (omniglot, mini-imagenet, cifar-fs, fc100, tiered-imagenet, "
                          "folder, ...)")
    data_root: str = option("data", "folder holding the dataset files", resume=True)
    dataset_options: dict[str, Any] = option({}, (
        "loader options as key=value,key=value; omniglot: val_alphabets=N, test_alphabets=N, rotate_classes=true "
        "(rotations as new classes: not with SLA's rotation transforms); folder: split_file=PATH"))
    image_size: int | None = option(None, "resize images to this side (default: the dataset's)")
    download: bool = option(False, "download missing files where an official URL exists", resume=True)
    augment: str = option("none", "on-device augmentation of training episodes (metaoptnet: crop+jitter+flip)",
                          choices=("none", "metaoptnet", "standard", "sla"))
    val_split: str = option("val", "split of the validation episodes")
    val_episodes: int = option(2000, "fixed validation episodes (0: no validation)")

    def check(self) -> None:
        self.dataset_options = parse_options(self.dataset_options, "dataset_options")
        check_at_least(self, 1, "image_size")
        check_at_least(self, 0, "val_episodes")


@dataclass
class Model(Options):
    backbone: str = option("resnet12", "feature extractor (resnet12, conv4, resnet18, resnet32, ...)")
    backbone_options: dict[str, Any] = option({}, (
        "backbone options as key=value,key=value (e.g. hidden=32 for conv4, avg_pool=true for resnet12)"))

    def check(self) -> None:
        self.backbone = registered("backbone", self.backbone)
        self.backbone_options = parse_options(self.backbone_options, "backbone_options")


@dataclass
class Method(Options):
    """The training mode and SLA's options."""

    mode: str = option("sla", "baseline: N-way; da: transforms keep the label; sla: NM-way joint labels; sla+sd: sla "
                       "plus self-distillation into a single-pass N-way prediction", choices=MODES)
    transforms: str = option("auto", "transform set (rotation, color_perm, rot_color_perm12, ...; fewshot-sla list); "
                             "auto: none for --mode baseline, rotation otherwise")
    large_loss: bool = option(False, "sla: sum (not mean) the joint loss over the M transforms (--with-large-loss "
                              "of the SLA code)")
    sd_temperature: float = option(1.0, "sla+sd: distillation temperature T")
    sd_beta: float = option(1.0, "sla+sd: weight of the distilled head's cross-entropy CE(u(x), y)")
    sd_start: float = option(0.0, "sla+sd: fraction of the run trained without the distillation term (L_SLA + "
                             "beta CE only), a warm-up of the joint head that teaches it (0 = distil from the start)")

    def check(self) -> None:
        from .transforms import get_transform_set

        if self.transforms == "auto":
            self.transforms = "none" if self.mode == "baseline" else "rotation"
        try:
            tset = get_transform_set(self.transforms)
        except ValueError as e:
            raise ConfigError(f"--transforms: {e}") from None
        self.transforms = tset.name
        if self.mode != "baseline" and tset.M == 1:
            raise ConfigError(f"--mode {self.mode} needs a transform set with more than one transform (M > 1), got "
                              f"--transforms {self.transforms}; use e.g. --transforms rotation, or --mode baseline")
        if self.sd_temperature <= 0 or self.sd_beta < 0:
            raise ConfigError(
                f"--sd-temperature must be > 0 and --sd-beta >= 0, got {self.sd_temperature} and {self.sd_beta}")
        if not 0.0 <= self.sd_start < 1.0:
            raise ConfigError(f"--sd-start must be in [0, 1) (a fraction of the run), got {self.sd_start}")
        if self.sd_start > 0 and self.mode != "sla+sd":
            raise ConfigError(f"--sd-start is the distillation warm-up of --mode sla+sd, not of --mode {self.mode}; "
                              "drop it")


@dataclass
class Optim(Options):
    """The optimiser; the pipeline declares its schedule (``lr_factors`` and its milestones)."""

    epochs: int = option(60, "training epochs", resume=True)
    lr: float = option(0.1, "base learning rate")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(5e-4, "weight decay (all parameters)")
    nesterov: bool = option(True, "Nesterov momentum")
    lr_factors: tuple[float, ...] = option((1.0, 0.06, 0.012, 0.0024), "lr multipliers before the first milestone "
                                           "and after each (one more than the milestones)")

    def check(self) -> None:
        self.lr_factors = tuple(float(f) for f in self.lr_factors)
        if not self.lr > 0 or not self.weight_decay >= 0 or not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"need --lr > 0, --weight-decay >= 0, --momentum in [0, 1), got {self.lr}, "
                              f"{self.weight_decay}, {self.momentum}")


@dataclass
class Device(Options):
    device: str = option("auto", "auto (CUDA when present), cpu, cuda, cuda:1, ...", resume=True)
    amp: str = option("none", "mixed precision of the backbone on CUDA (bf16, or fp16 with loss scaling)",
                      choices=AMP_MODES)
    channels_last: bool = option(False, "channels_last memory format (faster convolutions on recent GPUs)")
    num_threads: int = option(0, "CPU threads of torch (0: torch's default; 1 is often faster on a busy machine)",
                              resume=True)

    def check(self) -> None:
        self.amp = normalize_amp(self.amp)
        check_choice("amp", self.amp, AMP_MODES)
        check_at_least(self, 0, "num_threads")
        if self.device not in ("auto", "cpu") and not self.device.startswith(("cuda", "mps")):
            raise ConfigError(f"--device must be auto, cpu or cuda[:N], got {self.device!r}")


@dataclass
class Run(Options):
    """Seeding, processes, the run directory and logging; the pipeline names its runs (:meth:`run_name`)."""

    seed: int = option(0, "seed of initialisation, sampling and augmentation")
    accumulate: int = option(1, (
        "split each step's batch into this many chunks, one forward/backward each (gradients averaged, BatchNorm "
        "statistics per chunk): one process with --accumulate K computes what K torchrun processes compute"),
        resume=True)  # to resume on another number of processes: keep processes x accumulate fixed
    sync_bn: bool = option(False, "under torchrun on CUDA: SyncBatchNorm (statistics over all processes' share)")
    dist_timeout: float = option(600.0, "under torchrun: seconds a collective may wait before the job fails, so a "
                                 "dead process ends the job instead of hanging it", resume=True)
    deterministic: bool = option(False, (
        "CUDA: deterministic kernels only (no cuDNN autotuner), so a resumed run repeats an uninterrupted one bit "
        "for bit (slower); the CPU path is deterministic either way"), resume=True)
    run_dir: str = option("", "run directory (default: RUNS_ROOT/<a name from the options>)")
    runs_root: str = option("runs", "parent of auto-named run directories")
    log_every: int = option(100, "steps between metrics.jsonl records of the training loss")
    quiet: bool = option(False, "no progress bars or epoch lines", resume=True)

    def check(self) -> None:
        check_at_least(self, 1, "accumulate", "log_every")
        if not self.dist_timeout > 0:
            raise ConfigError(f"--dist-timeout must be > 0 seconds, got {self.dist_timeout}")

    def run_name(self) -> str:
        raise NotImplementedError

    def default_run_dir(self) -> str:
        """``RUNS_ROOT/<run_name()>``: where a run goes without ``--run-dir``."""
        return f"{self.runs_root}/{self.run_name()}"
