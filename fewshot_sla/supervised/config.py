"""Configuration of the supervised (standard and long-tailed CIFAR) pipelines.

One dataclass, :class:`SupervisedConfig`, holds every option; its defaults are the recipe
of the SLA authors' code for standard CIFAR (ResNet-32, SGD lr 0.1, momentum 0.9, weight
decay 1e-4, batch 128, 80,000 iterations, lr x0.1 at 50% and 75%, 5,000 held-out
validation images). The long-tailed recipe of Cao et al. (LDAM-DRW; 200 epochs, 5 warm-up
epochs, lr x0.01 at epoch 160 and x0.0001 at 180, weight decay 2e-4, DRW from epoch 160)
is the named config ``supervised_cifar10_lt100`` (``fewshot_sla/configs/``); ``--imbalance-ratio``
alone changes the training set, not the recipe (the command line prints a note naming the
config).

Long-tailed training sets are cut from the *full* training set, as Cao et al.: ``n_max`` is a
class's full count (5,000 for CIFAR-10, 500 for CIFAR-100), so ``--imbalance-ratio 100`` gives
the published counts. There is then no validation hold-out (Cao et al. have none and report
the last checkpoint): ``val_size`` unset means 5,000 for balanced runs and 0 for long-tailed
ones, and a long-tailed run with ``val_size > 0`` is a configuration error.

Schedules are given as *fractions of the run* so that a shortened run keeps their shape:
``lr_milestones=(0.8, 0.9)`` with ``epochs=200`` means epochs 160 and 180; with
``epochs=20`` it means epochs 16 and 18. The unit of the run is the epoch when
``epochs > 0`` (each epoch is one pass over a fresh permutation of the training set,
the last batch smaller), otherwise the iteration (each batch drawn independently). The
warm-up ramps per iteration unless ``warmup_by = "epoch"`` (the long-tailed configs: Cao et al.
keep the lr constant within an epoch, epoch e < 5 at (e+1)/5 of it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from ..config import ConfigError, parse_options
from ..engine.precision import AMP_MODES, normalize_amp
from ..transforms import get_transform_set

__all__ = ["MODES", "LOSSES", "JOINT_LOSSES", "LDAM_DRW_MEAN", "LDAM_DRW_STD", "SupervisedConfig",
           "parse_backbone_options"]

MODES = ("baseline", "da", "mt", "sla", "sla+sd")
LOSSES = ("ce", "cb", "ldam")
JOINT_LOSSES = ("ce", "weighted", "same")
AUGMENTS = ("sla", "standard", "ldam", "metaoptnet", "none")
WARMUP_UNITS = ("iteration", "epoch")
# LDAM-DRW's cifar_train.py normalises CIFAR-10 and CIFAR-100 alike with these (not the data's own std)
LDAM_DRW_MEAN = (0.4914, 0.4822, 0.4465)
LDAM_DRW_STD = (0.2023, 0.1994, 0.2010)
DEFAULT_VAL_SIZE = 5000  # validation images of balanced runs (the SLA authors' code)


def _f(default, help: str, **extra):  # noqa: A002 - mirrors argparse's name
    meta = {"help": help, **extra}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class SupervisedConfig:
    """Every option of ``fewshot-sla supervised`` (one ``--option`` per field)."""

    # ---- data
    dataset: str = _f("cifar10", "any dataset of fewshot_sla.data (fewshot-sla list): cifar10 and cifar100 (train and "
                      "test images of the same classes), or a few-shot benchmark (omniglot, mini-imagenet, "
                      "tiered-imagenet, cifar-fs, fc100, folder), trained on its training classes (RFS's "
                      "pretraining; evaluate few-shot episodes with fewshot-sla eval --checkpoint RUN)")
    data_root: str = _f("data", "folder holding the dataset (cifar-10-batches-py/, the official "
                        "tar.gz, or an image folder / zip such as cifar10-jpg.zip)")
    dataset_options: dict = field(default_factory=dict, metadata={"help": (
        "loader options as key=value,key=value (omniglot: val_alphabets=N,test_alphabets=N; folder: split_file=PATH)")})
    image_size: int | None = _f(None, "resize images to this side (default: the dataset's)")
    download: bool = _f(False, "download missing files where an official URL exists (Omniglot, CIFAR)")
    cache_dir: str = _f("", "store the decoded images there as .npz and reuse them on later runs ('' = off)")
    val_size: int | None = _f(None, "training images held out for validation and model selection, val_size / C "
                              "per class (0 = none: the last checkpoint is the selected one); unset = "
                              f"{DEFAULT_VAL_SIZE} for balanced runs, 0 for long-tailed runs, which accept only 0 "
                              "(their training set is cut from the full training set, as Cao et al.)")
    split_seed: int = _f(0, "seed of the validation hold-out")
    val_episodes: int = _f(0, "few-shot datasets: select the checkpoint by this many fixed episodes of --val-split "
                           "(the few-shot criterion; the backbone's features solved by --val-head) instead of "
                           "held-out base images (0 = off)")
    val_split: str = _f("val", "split of the validation episodes")
    val_way: int = _f(5, "classes per validation episode")
    val_shot: int = _f(1, "support images per class in validation episodes")
    val_query: int = _f(15, "queries per class in validation episodes")
    val_head: str = _f("protonet", "head that solves the validation episodes (protonet, ridge, svm, r2d2, logistic)")
    imbalance_ratio: float = _f(1.0, "long-tailed training set: class c keeps int(n_max * R^(-c/(C-1))) images, "
                                "n_max = a class's count in the full training set (Cao et al.; CIFAR-10 R=100: "
                                "5000..50, 12,406 images); 1 = balanced. It changes the data, not the recipe: for "
                                "Cao et al.'s 200-epoch LDAM-DRW recipe also pass --config "
                                "supervised_<dataset>_lt<R> (without --config a note says so)")
    imbalance_seed: int = _f(0, "seed choosing the images each class keeps (as LDAM-DRW's rand_number)")
    augment: str = _f("sla", "training augmentation: 'sla' (crop 32 pad 4 + flip, mean = std = 0.5, the SLA "
                      "code), 'standard' (crop + flip, the dataset's own mean/std), 'ldam' (crop + flip, mean "
                      f"{LDAM_DRW_MEAN} std {LDAM_DRW_STD} for both CIFARs, as LDAM-DRW's code), 'none'",
                      choices=AUGMENTS)

    # ---- method
    mode: str = _f("sla", "baseline | da (augmentation, label kept) | mt (multi-task) | sla | sla+sd",
                   choices=MODES)
    transforms: str = _f("auto", "transform set (rotation, color_perm, rot_color_perm12, ...); 'auto' = "
                         "'none' for baseline, 'rotation' otherwise")
    large_loss: bool = _f(False, "multiply the joint loss by M (sum over transforms; --with-large-loss of "
                          "the SLA code)")
    sd_temperature: float = _f(1.0, "distillation temperature T of SLA+SD")
    sd_beta: float = _f(1.0, "weight of CE(u(x), y) in SLA+SD")
    sd_start: float = _f(0.0, "SLA+SD: fraction of the run trained without the distillation term (L_SLA + "
                              "beta CE only), a warm-up of the joint head that teaches it (0 = the paper)")
    loss: str = _f("ce", "loss of the N-way head: ce, cb (class-balanced weights from the start), ldam "
                   "(label-distribution-aware margins, cosine classifier)", choices=LOSSES)
    drw: bool = _f(False, "deferred re-weighting: class-balanced weights only from --drw-start on")
    drw_start: float = _f(0.8, "fraction of the run where DRW switches the weights on (0.8 = epoch 160/200)")
    cb_beta: float = _f(0.9999, "beta of the class-balanced weights (1 - beta) / (1 - beta^n_c)")
    ldam_max_margin: float = _f(0.5, "largest LDAM margin (the rarest class)")
    ldam_scale: float = _f(30.0, "scale s of the cosine classifiers (used with --loss ldam)")
    joint_loss: str = _f("weighted", "long-tailed runs, loss of the joint head: 'ce' (unweighted), "
                         "'weighted' (the N-way head's class weight w_y on every row of class y), "
                         "'same' (weights and LDAM margins of y on joint class (y, j))",
                         choices=JOINT_LOSSES)

    # ---- model
    backbone: str = _f("resnet32", "feature extractor (fewshot_sla.backbones)")
    backbone_options: dict = field(default_factory=dict, metadata={"help": (
        "backbone options as key=value,key=value (e.g. 'width=32'), the grammar of meta-train's")})

    # ---- optimisation
    batch_size: int = _f(128, "images per batch before the transforms (the effective batch is batch_size*M)")
    iterations: int = _f(80000, "training iterations (ignored when --epochs > 0)")
    epochs: int = _f(0, "train for this many epochs over the training set instead of --iterations")
    lr: float = _f(0.1, "initial learning rate")
    momentum: float = _f(0.9, "SGD momentum")
    nesterov: bool = _f(False, "Nesterov momentum")
    weight_decay: float = _f(1e-4, "weight decay (all parameters)")
    lr_milestones: tuple[float, ...] = _f((0.5, 0.75), "fractions of the run where the lr factor changes")
    lr_factors: tuple[float, ...] = _f((1.0, 0.1, 0.01), "lr factors before, between and after the milestones")
    warmup: float = _f(0.0, "fraction of the run of linear lr warm-up (0.025 = 5 of 200 epochs)")
    warmup_by: str = _f("iteration", "warm-up steps: 'iteration' (the lr grows every iteration, reaching "
                        "(k+1)/W of it at iteration k < W) or 'epoch' (Cao et al.: the lr is constant within an "
                        "epoch, (e+1)/W of it in epoch e < W, so the first of 5 warm-up epochs runs at lr/5; "
                        "needs --epochs)", choices=WARMUP_UNITS)

    # ---- evaluation and bookkeeping
    eval_every: int = _f(2000, "validate (and checkpoint) every this many iterations (epochs when --epochs > 0)")
    eval_test: bool = _f(False, "also evaluate the test set at every validation (logged, never used to select)")
    eval_batch_size: int = _f(500, "images per evaluation batch (before the transforms)")
    log_every: int = _f(100, "log the training loss every this many iterations")
    seed: int = _f(0, "seed of initialisation, batch sampling and augmentation")
    device: str = _f("auto", "auto, cpu, cuda or cuda:K")
    channels_last: bool = _f(False, "channels_last memory format (faster convolutions on recent GPUs)")
    amp: str = _f("none", "mixed precision of the backbone on CUDA (bf16, or fp16 with loss scaling)",
                  choices=AMP_MODES)
    num_threads: int = _f(0, "CPU threads of torch (0: torch's default; 1 is often faster on a busy machine)")
    deterministic: bool = _f(False, "CUDA: deterministic kernels only (no cuDNN autotuner), so a resumed run "
                             "repeats an uninterrupted one bit for bit (slower)")
    accumulate: int = _f(1, "split each batch into this many chunks, one forward/backward each (gradients "
                         "summed, BatchNorm statistics per chunk): one process with --accumulate K computes "
                         "what K torchrun processes compute")
    sync_bn: bool = _f(False, "under torchrun on CUDA: SyncBatchNorm, BatchNorm statistics over every process's "
                       "share of the batch (all M transformed copies)")
    dist_timeout: float = _f(600.0, "under torchrun: seconds a collective may wait before the job fails, so a "
                             "dead process ends the job instead of hanging it")
    run_dir: str = _f("", "run directory (default RUNS_ROOT/<dataset>[-lt<R>]-<mode>-<transforms>-<loss>-s<seed>)")
    runs_root: str = _f("runs/supervised", "parent of auto-named run directories")
    stop_after: int = _f(0, "stop (with a checkpoint) after this many iterations; --resume continues (0 = off)")
    quiet: bool = _f(False, "no progress bar")
    plot: bool = _f(True, "write curves.png at the end (needs matplotlib)")

    #: old option names -> new ones (accepted with a one-line note; see fewshot_sla.config)
    RENAMED: ClassVar[dict] = {"out_dir": "run_dir", "temperature": "sd_temperature",
                               "progress": ("quiet", lambda v: not v)}

    def __post_init__(self) -> None:
        self.amp = normalize_amp(self.amp)
        self.dataset_options = parse_options(self.dataset_options, "dataset_options")
        self.backbone_options = parse_options(self.backbone_options, "backbone_options")
        self.lr_milestones = tuple(float(v) for v in self.lr_milestones)
        self.lr_factors = tuple(float(v) for v in self.lr_factors)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the option and the fix for any invalid value."""

        def bad(msg: str) -> None:
            raise ConfigError(msg)

        if self.mode not in MODES:
            bad(f"unknown --mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.loss not in LOSSES:
            bad(f"unknown --loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.joint_loss not in JOINT_LOSSES:
            bad(f"unknown --joint-loss {self.joint_loss!r}; choose one of {', '.join(JOINT_LOSSES)}")
        if self.warmup_by not in WARMUP_UNITS:
            bad(f"unknown --warmup-by {self.warmup_by!r}; choose one of {', '.join(WARMUP_UNITS)}")
        if self.warmup_by == "epoch" and self.epochs == 0:
            bad("--warmup-by epoch needs an epoch-based run (--epochs > 0); use --warmup-by iteration")
        try:
            from ..data.registry import DATASETS

            self.dataset = DATASETS.canonical(self.dataset)
        except ValueError as e:
            bad(f"--dataset: {e}")
        if self.val_episodes < 0 or min(self.val_way, self.val_shot, self.val_query) < 1:
            bad(f"need --val-episodes >= 0 and --val-way/--val-shot/--val-query >= 1, got {self.val_episodes}, "
                f"{self.val_way}, {self.val_shot}, {self.val_query}")
        if self.val_episodes and not self.fewshot_dataset:
            bad(f"--val-episodes needs a few-shot dataset (its --val-split classes are not the training classes); "
                f"{self.dataset} has the same classes in every split: use --val-size")
        if self.val_episodes and self.val_size:
            bad("--val-episodes and --val-size are two validation criteria; pass one of them")
        if self.augment not in AUGMENTS:
            bad(f"unknown --augment {self.augment!r}; choose one of {', '.join(AUGMENTS)}")
        if self.transforms != "auto":
            try:
                m = get_transform_set(self.transforms).M
            except ValueError as e:
                bad(f"--transforms: {e}")
            if self.mode == "baseline" and m != 1:
                bad(f"--mode baseline trains on untransformed images, but --transforms {self.transforms} "
                    "was given; drop --transforms (or pass 'none'), or use --mode da/mt/sla/sla+sd")
            if self.mode != "baseline" and m == 1:
                bad(f"--mode {self.mode} needs a transform set with M > 1 (e.g. --transforms rotation); "
                    "use --mode baseline for plain training")
        for name in ("batch_size", "eval_batch_size", "eval_every", "log_every", "accumulate"):
            if getattr(self, name) < 1:
                bad(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if self.epochs < 0 or (self.epochs == 0 and self.iterations < 1):
            bad(f"need --iterations >= 1 or --epochs >= 1, got iterations={self.iterations}, epochs={self.epochs}")
        if self.batch_size % self.accumulate:
            bad(f"--batch-size {self.batch_size} does not split into --accumulate {self.accumulate} equal chunks; "
                f"use a --batch-size that is a multiple of {self.accumulate}")
        if self.dist_timeout <= 0:
            bad(f"--dist-timeout must be > 0 seconds, got {self.dist_timeout}")
        if self.val_size is not None and self.val_size < 0:
            bad(f"--val-size must be >= 0, got {self.val_size}")
        if self.val_size and self.imbalance_ratio > 1.0:
            bad(f"--val-size {self.val_size} with --imbalance-ratio {self.imbalance_ratio:g}: the long-tailed set is "
                "cut from the full training set (Cao et al.; its largest class keeps every image), so nothing is "
                "left to hold out; drop --val-size (or pass 0: no validation, the last checkpoint is reported), "
                "e.g. with --config supervised_<dataset>_lt<R>")
        if self.stop_after < 0:
            bad(f"--stop-after must be >= 0 (0 = off), got {self.stop_after}")
        if not self.imbalance_ratio >= 1.0:
            bad(f"--imbalance-ratio must be >= 1 (n_max / n_min; 1 = balanced), got {self.imbalance_ratio}")
        if not 0.0 <= self.cb_beta < 1.0:
            bad(f"--cb-beta must be in [0, 1), got {self.cb_beta}")
        if self.ldam_max_margin < 0 or self.ldam_scale <= 0:
            bad(f"need --ldam-max-margin >= 0 and --ldam-scale > 0, got {self.ldam_max_margin}, {self.ldam_scale}")
        if self.sd_temperature <= 0:
            bad(f"--sd-temperature must be > 0, got {self.sd_temperature}")
        if self.sd_beta < 0 or not 0.0 <= self.sd_start < 1.0:
            bad(f"need --sd-beta >= 0 and 0 <= --sd-start < 1, got {self.sd_beta} and {self.sd_start}")
        if self.sd_start > 0 and self.mode != "sla+sd":
            bad(f"--sd-start is the distillation warm-up of --mode sla+sd, not of --mode {self.mode}; drop it")
        if self.amp not in AMP_MODES:
            bad(f"--amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if self.num_threads < 0:
            bad(f"--num-threads must be >= 0 (0: torch's default), got {self.num_threads}")
        ms = self.lr_milestones
        if any(not 0.0 < m < 1.0 for m in ms) or list(ms) != sorted(ms):
            bad(f"--lr-milestones are increasing fractions of the run in (0, 1), got {ms}; e.g. 0.5 0.75")
        if len(self.lr_factors) != len(ms) + 1:
            bad(f"--lr-factors needs one more value than --lr-milestones ({len(ms) + 1}), got "
                f"{len(self.lr_factors)}: {self.lr_factors}")
        if not 0.0 <= self.warmup < 1.0 or not 0.0 <= self.drw_start <= 1.0:
            bad(f"--warmup must be in [0, 1) and --drw-start in [0, 1], got {self.warmup}, {self.drw_start}")
        if self.lr <= 0 or self.weight_decay < 0 or not 0.0 <= self.momentum < 1.0:
            bad(f"need --lr > 0, --weight-decay >= 0, --momentum in [0, 1), got {self.lr}, "
                f"{self.weight_decay}, {self.momentum}")

    # ------------------------------------------------------------------ derived values
    @property
    def transform_name(self) -> str:
        """The transform set actually used (``auto`` resolved)."""
        if self.transforms == "auto":
            return "none" if self.mode == "baseline" else "rotation"
        return get_transform_set(self.transforms).name

    @property
    def long_tailed(self) -> bool:
        return self.imbalance_ratio > 1.0

    @property
    def validation_size(self) -> int:
        """Images held out for validation: ``val_size``, or when unset ``DEFAULT_VAL_SIZE``
        (balanced runs) / 0 (long-tailed runs)."""
        if self.val_size is not None:
            return int(self.val_size)
        return 0 if self.long_tailed or self.fewshot_dataset else DEFAULT_VAL_SIZE

    @property
    def fewshot_dataset(self) -> bool:
        """A few-shot benchmark (class-disjoint splits): training on its training classes, no
        base-class test set (the test is few-shot episodes, ``fewshot-sla eval``)."""
        from ..data import dataset_info

        return dataset_info(self.dataset).fewshot

    @property
    def cosine(self) -> bool:
        """Cosine (normalised) classifiers with scale ``ldam_scale``: used with the LDAM loss."""
        return self.loss == "ldam"

    @property
    def reweighted(self) -> bool:
        """Whether class-balanced weights are used at some point of the run."""
        return self.loss == "cb" or self.drw

    def default_run_dir(self) -> str:
        lt = f"-lt{self.imbalance_ratio:g}" if self.long_tailed else ""
        loss = self.loss + ("-drw" if self.drw else "")
        return f"{self.runs_root}/{self.dataset}{lt}-{self.mode}-{self.transform_name}-{loss}-s{self.seed}"

    def replace(self, **changes) -> SupervisedConfig:
        return dataclasses.replace(self, **changes)


def parse_backbone_options(text: str | dict) -> dict:
    """``"width=32,avg_pool=true"`` -> ``{"width": 32, "avg_pool": True}``: meta-train's grammar
    (:func:`fewshot_sla.meta.config.parse_options`), kept under its old name."""
    return parse_options(text, "backbone_options")
