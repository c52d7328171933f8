"""The sections both pipelines' run configs are made of, and the one way to declare and check an option.

A config inherits sections, so its fields stay flat (one ``--option``, TOML and ``config.json`` key
each); :func:`option` declares a field; building a config checks bounds, then each section's
``check`` (bases first), then choices. Old spellings: :data:`RENAMED`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .config import ConfigError, flag, parse_options
from .engine.precision import AMP_MODES, normalize_amp

__all__ = ["MODES", "RENAMED", "EpisodeShape", "Options", "Data", "Model", "Method", "Optim", "Device", "Run",
           "option", "check_choice", "registered"]

MODES: tuple[str, ...] = ("baseline", "da", "sla", "sla+sd")
#: old option names -> new ones (or (new, value converter)), for every config (one note each when used)
RENAMED: dict[str, Any] = {
    "out_dir": "run_dir", "temperature": "sd_temperature", "progress": ("quiet", lambda v: not v),
    "lr_milestones": "lr_milestone_fractions",  # supervised's (meta-train's lr_milestones count epochs)
}


@dataclass(frozen=True)
class EpisodeShape:
    """An N-way K-shot episode with ``query`` query images per class."""

    way: int
    shot: int
    query: int

    def __iter__(self):  # noqa: ANN204 - ``EpisodeSampler(labels, *shape, ...)``
        return iter((self.way, self.shot, self.query))


def option(default: Any = dataclasses.MISSING, help: str = "", *,  # noqa: A002 - argparse's name
           choices: tuple[str, ...] | None = None, resume: bool = False, ge: float | None = None,
           gt: float | None = None, lt: float | None = None, le: float | None = None, **meta: Any) -> Any:
    """An option: default (none: required), ``--help`` text, ``choices``, bounds (``ge`` <=, ``gt`` <, ...
    the value; ``None`` values pass), whether ``--resume`` may change it, and argparse's ``metavar`` /
    ``positional`` (:mod:`fewshot_sla.cli_options`)."""
    md = {"help": help, "choices": choices and tuple(choices), "resume": resume, "bounds": (ge, gt, lt, le), **meta}
    md = {k: v for k, v in md.items() if v and v != (None,) * 4}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=md)
    return field(default=default, metadata=md)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """``value`` (each item of a tuple) is one of ``choices``."""
    for v in value if isinstance(value, tuple) else (value,):
        if v not in choices:
            raise ConfigError(f"{flag(name)} must be one of {', '.join(choices)}, got {v!r}")


def check_bounds(name: str, value: Any, ge: Any, gt: Any, lt: Any, le: Any) -> None:
    """``value`` (each item of a tuple; ``None``: unset) within the bounds, else a one-line error naming them."""
    low, high = ("[", ge) if ge is not None else ("(", gt), (")", lt) if lt is not None else ("]", le)
    for v in value if isinstance(value, tuple) else (value,):
        number = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
        if v is None or number and (ge is None or v >= ge) and (gt is None or v > gt) and (lt is None or v < lt) and (
                le is None or v <= le):
            continue
        what = f"in {low[0]}{low[1]}, {high[1]}{high[0]}" if high[1] is not None else \
            f"a {'finite ' * isinstance(v, float)}number {'>=' if ge is not None else '>'} {low[1]}"
        raise ConfigError(f"{flag(name)} must be {what}, got {v!r}")


def registered(kind: str, name: str) -> str:
    """``name``'s canonical spelling in the registry of ``kind`` (head, backbone, dataset), asked when the
    config is built so that what a user registers works from the command line and configs."""
    from .backbones import BACKBONES
    from .data.registry import DATASETS
    from .heads import HEADS

    try:
        return {"head": HEADS, "backbone": BACKBONES, "dataset": DATASETS}[kind].canonical(name)
    except ValueError as e:
        raise ConfigError(f"--{kind}: {e}") from None


class Options:
    """Base of the run configs: the one table of old spellings, and the checks run when one is built."""

    RENAMED: ClassVar[dict[str, Any]] = RENAMED

    def __post_init__(self) -> None:
        fields = dataclasses.fields(self)  # type: ignore[arg-type]
        for f in fields:  # tuples of the default's item type, dicts parsed from key=value text; then bounds
            value = getattr(self, f.name)
            if isinstance(f.default, tuple):
                setattr(self, f.name, tuple(map(type(f.default[0]), value)) if f.default else tuple(value))
            elif f.default_factory is dict:
                setattr(self, f.name, parse_options(value, f.name))
            if "bounds" in f.metadata:
                check_bounds(f.name, getattr(self, f.name), *f.metadata["bounds"])
        for klass in reversed(type(self).__mro__):
            if "check" in vars(klass):
                vars(klass)["check"](self)
        for f in fields:
            if "choices" in f.metadata:
                check_choice(f.name, getattr(self, f.name), f.metadata["choices"])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass
class Data(Options):
    dataset: str = option("mini-imagenet", "dataset (omniglot, mini-imagenet, cifar-fs, fc100, folder, ...)")
    data_root: str = option("data", "folder holding the dataset files", resume=True)
    dataset_options: dict[str, Any] = option({}, "loader options as key=value,... (omniglot: val_alphabets=N, "
                                             "rotate_classes=true (rotations as new classes: not with SLA's rotation "
                                             "transforms); folder: split_file=PATH)")
    image_size: int | None = option(None, "resize images to this side (default: the dataset's)", ge=1)
    download: bool = option(False, "download missing files where an official URL exists", resume=True)
    augment: str = option("none", "training augmentation", choices=("none", "metaoptnet", "standard", "sla"))
    val_split: str = option("val", "split of the validation episodes")
    val_episodes: int = option(2000, "fixed validation episodes (0: no validation)", ge=0)


@dataclass
class Model(Options):
    backbone: str = option("resnet12", "feature extractor (resnet12, conv4, resnet18, resnet32, ...)")
    backbone_options: dict[str, Any] = option({}, "backbone options as key=value,... (e.g. hidden=32 for conv4)")

    def check(self) -> None:
        self.backbone = registered("backbone", self.backbone)


@dataclass
class Method(Options):
    """The training mode and SLA's options."""

    mode: str = option("sla", "baseline (N-way), da (label kept), sla (NM-way joint labels), sla+sd", choices=MODES)
    transforms: str = option("auto", "transform set (fewshot-sla list); auto: none for baseline, else rotation")
    large_loss: bool = option(False, "sla: sum (not mean) the joint loss over the M transforms")
    sd_temperature: float = option(1.0, "sla+sd: distillation temperature T", gt=0)
    sd_beta: float = option(1.0, "sla+sd: weight of the distilled head's cross-entropy", ge=0)
    sd_start: float = option(0.0, "sla+sd: fraction of the run trained without the distillation term, a warm-up of "
                             "the joint head that teaches it (0 = distil from the start)", ge=0, lt=1)

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
        if self.sd_start > 0 and self.mode != "sla+sd":
            raise ConfigError(f"--sd-start is the distillation warm-up of --mode sla+sd, not of --mode {self.mode}; "
                              "drop it")


@dataclass
class Optim(Options):
    """The optimiser and ``lr_factors``; the pipeline declares where the factors change."""

    epochs: int = option(60, "training epochs", resume=True, ge=1)
    lr: float = option(0.1, "base learning rate", gt=0)
    momentum: float = option(0.9, "SGD momentum", ge=0, lt=1)
    weight_decay: float = option(5e-4, "weight decay (all parameters)", ge=0)
    nesterov: bool = option(True, "Nesterov momentum")
    lr_factors: tuple[float, ...] = option((1.0, 0.06, 0.012, 0.0024), "lr factors before and after each milestone")

    def check_milestones(self, name: str) -> None:
        """The lr milestones (option ``name``) increase, with one more ``--lr-factors`` value."""
        milestones = getattr(self, name)
        if list(milestones) != sorted(milestones):
            raise ConfigError(f"{flag(name)} must be increasing, got {list(milestones)}")
        if len(self.lr_factors) != len(milestones) + 1:
            raise ConfigError(f"--lr-factors needs one more value than {flag(name)}, got {len(self.lr_factors)} "
                              f"factors for {len(milestones)} milestones")


@dataclass
class Device(Options):
    device: str = option("auto", "auto (CUDA when present), cpu, cuda, cuda:1, ...", resume=True)
    amp: str = option("none", "mixed precision of the backbone on CUDA", choices=AMP_MODES)
    channels_last: bool = option(False, "channels_last memory format")
    num_threads: int = option(0, "CPU threads of torch (0: torch's default)", resume=True, ge=0)

    def check(self) -> None:
        self.amp = normalize_amp(self.amp)
        if self.device not in ("auto", "cpu") and not self.device.startswith(("cuda", "mps")):
            raise ConfigError(f"--device must be auto, cpu or cuda[:N], got {self.device!r}")


@dataclass
class Run(Options):
    """Seeding, processes, the run directory and logging; a pipeline names its runs (``run_name()``)."""

    seed: int = option(0, "seed of initialisation, sampling and augmentation")
    accumulate: int = option(1, "split each step into this many chunks (one forward/backward each): one process "
                             "computes what that many torchrun processes compute", resume=True, ge=1)
    sync_bn: bool = option(False, "under torchrun on CUDA: SyncBatchNorm (statistics over all processes' share)")
    dist_timeout: float = option(600.0, "under torchrun: seconds a collective waits before the job fails",
                                 resume=True, gt=0)
    deterministic: bool = option(False, "CUDA: deterministic kernels (resumed = uninterrupted, bit for bit; slower)",
                                 resume=True)
    run_dir: str = option("", "run directory (default: RUNS_ROOT/<a name from the options>)")
    runs_root: str = option("runs", "parent of auto-named run directories")
    log_every: int = option(100, "steps between metrics.jsonl records of the training loss", ge=1)
    quiet: bool = option(False, "no progress bars or epoch lines", resume=True)

    def default_run_dir(self) -> str:
        """``RUNS_ROOT/<run_name()>``: where a run goes without ``--run-dir``."""
        return f"{self.runs_root}/{self.run_name()}"
