"""Configuration of the supervised (standard and long-tailed) pipeline, made of :mod:`fewshot_sla.sections`.

Defaults are the SLA authors' CIFAR recipe (ResNet-32, SGD 0.1, momentum 0.9, wd 1e-4, batch 128,
80,000 iterations, lr x0.1 at 50% and 75%); Cao et al.'s LDAM-DRW is the named config
``supervised_cifar10_lt100``. Schedules are fractions of the run.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import COMMAND_CONFIGS, ConfigError
from ..sections import Data, Device, EpisodeShape, Method, Model, Optim, Run, option, registered

__all__ = ["MODES", "LOSSES", "JOINT_LOSSES", "LDAM_DRW_MEAN", "LDAM_DRW_STD", "SupervisedConfig"]

MODES = ("baseline", "da", "mt", "sla", "sla+sd")
LOSSES = ("ce", "cb", "ldam")
JOINT_LOSSES = ("ce", "weighted", "same")
AUGMENTS = ("sla", "standard", "ldam", "metaoptnet", "none")
WARMUP_UNITS = ("iteration", "epoch")
# LDAM-DRW's cifar_train.py normalises CIFAR-10 and CIFAR-100 alike with these (not the data's own std)
LDAM_DRW_MEAN = (0.4914, 0.4822, 0.4465)
LDAM_DRW_STD = (0.2023, 0.1994, 0.2010)
DEFAULT_VAL_SIZE = 5000  # validation images of balanced runs (the SLA authors' code)


@COMMAND_CONFIGS.register("supervised")
@dataclass
class SupervisedConfig(Run, Device, Optim, Method, Model, Data):
    """Every option of ``fewshot-sla supervised`` (one ``--option`` per field); the fields of the
    shared sections whose default is another here are declared again (they keep their place)."""

    # ---- data
    dataset: str = option("cifar10", "cifar10, cifar100, or a few-shot benchmark trained on its training classes "
                          "(RFS's pretraining; evaluate its episodes with fewshot-sla eval --checkpoint RUN)")
    download: bool = option(False, "download missing files where an official URL exists (Omniglot, CIFAR)")
    augment: str = option("sla", "sla (crop + flip, mean = std = 0.5: the SLA code), standard (crop + flip, the "
                          "dataset's mean/std), ldam (crop + flip, LDAM-DRW's CIFAR mean/std), none", choices=AUGMENTS)
    val_episodes: int = option(0, "few-shot datasets: select the checkpoint by this many fixed episodes of "
                               "--val-split solved by --val-head, not by held-out images (0 = off)", ge=0)
    cache_dir: str = option("", "decode once into a .npy cache there, memory-mapped when large ('': "
                                "$FEWSHOT_SLA_CACHE if set, else no cache)", resume=True)
    val_size: int | None = option(None, f"training images held out for validation (0: none, the last checkpoint is "
                                  f"selected); unset: {DEFAULT_VAL_SIZE}, 0 for long-tailed runs (only 0)", ge=0)
    split_seed: int = option(0, "seed of the validation hold-out")
    val_way: int = option(5, "classes per validation episode", ge=1)
    val_shot: int = option(1, "support images per class in validation episodes", ge=1)
    val_query: int = option(15, "queries per class in validation episodes", ge=1)
    val_head: str = option("protonet", "head that solves the validation episodes (protonet, ridge, svm, ...)")
    imbalance_ratio: float = option(1.0, "long-tailed training set: class c keeps int(n_max * R^(-c/(C-1))) images "
                                    "(Cao et al.); 1 = balanced. For their recipe pass --config "
                                    "supervised_<dataset>_lt<R>", ge=1)
    imbalance_seed: int = option(0, "seed choosing the images each class keeps (as LDAM-DRW's rand_number)")
    # ---- method
    mode: str = option("sla", "baseline, da (label kept), mt (multi-task), sla, sla+sd", choices=MODES)
    loss: str = option("ce", "N-way loss: ce, cb (class-balanced), ldam (margins, cosine classifier)", choices=LOSSES)
    drw: bool = option(False, "deferred re-weighting: class-balanced weights only from --drw-start on")
    drw_start: float = option(0.8, "fraction of the run where DRW switches the weights on", ge=0, le=1)
    cb_beta: float = option(0.9999, "beta of the class-balanced weights (1 - beta) / (1 - beta^n_c)", ge=0, lt=1)
    ldam_max_margin: float = option(0.5, "largest LDAM margin (the rarest class)", ge=0)
    ldam_scale: float = option(30.0, "scale s of the cosine classifiers (used with --loss ldam)", gt=0)
    joint_loss: str = option("weighted", "long-tailed runs, loss of the joint head: ce (unweighted), weighted (class "
                             "y's weight on its rows), same (y's weights and LDAM margins)", choices=JOINT_LOSSES)
    # ---- model
    backbone: str = option("resnet32", "feature extractor (fewshot_sla.backbones)")
    # ---- optimisation
    batch_size: int = option(128, "images per batch before the transforms (x M after them)", ge=1)
    iterations: int = option(80000, "training iterations (ignored when --epochs > 0)")
    epochs: int = option(0, "train for this many epochs over the training set instead of --iterations", ge=0)
    nesterov: bool = option(False, "Nesterov momentum")
    weight_decay: float = option(1e-4, "weight decay (all parameters)")
    lr_milestone_fractions: tuple[float, ...] = option((0.5, 0.75), "fractions of the run where the lr factor "
                                                       "changes (meta-train's --lr-milestones: epochs)", gt=0, lt=1)
    lr_factors: tuple[float, ...] = option((1.0, 0.1, 0.01), "lr factors before, between and after the milestones")
    warmup: float = option(0.0, "fraction of the run of linear lr warm-up (0.025 = 5 of 200 epochs)", ge=0, lt=1)
    warmup_by: str = option("iteration", "the warm-up grows the lr every iteration, or every epoch (Cao et al.: "
                            "epoch e < W at (e+1)/W of it; needs --epochs)", choices=WARMUP_UNITS)
    # ---- evaluation and bookkeeping
    eval_every: int = option(2000, "validate and checkpoint every this many iterations (epochs with --epochs)", ge=1)
    eval_test: bool = option(False, "also evaluate the test set at every validation (logged, never used to select)")
    eval_batch_size: int = option(500, "images per evaluation batch (before the transforms)", resume=True, ge=1)
    runs_root: str = option("runs/supervised", "parent of auto-named run directories")
    stop_after: int = option(0, "stop (with a checkpoint) after this many iterations (0 = off)", resume=True, ge=0)
    plot: bool = option(True, "write curves.png at the end (needs matplotlib)", resume=True)

    def check(self) -> None:
        self.dataset = registered("dataset", self.dataset)
        if self.warmup_by == "epoch" and self.epochs == 0:
            raise ConfigError("--warmup-by epoch needs an epoch-based run (--epochs > 0); use --warmup-by iteration")
        if self.val_episodes and not self.fewshot_dataset:
            raise ConfigError(f"--val-episodes needs a few-shot dataset; {self.dataset} has the same classes in every "
                              "split: use --val-size")
        if self.val_episodes and self.val_size:
            raise ConfigError("--val-episodes and --val-size are two validation criteria; pass one of them")
        if self.mode == "baseline" and self.transforms != "none":
            raise ConfigError(f"--mode baseline trains on untransformed images, but --transforms {self.transforms} "
                              "was given; drop --transforms (or pass 'none'), or use --mode da/mt/sla/sla+sd")
        if self.epochs == 0 and self.iterations < 1:
            raise ConfigError(f"need --iterations >= 1 or --epochs >= 1, got iterations={self.iterations}, "
                              f"epochs={self.epochs}")
        if self.batch_size % self.accumulate:
            raise ConfigError(f"--batch-size {self.batch_size} does not split into --accumulate {self.accumulate} "
                              f"equal chunks; use a --batch-size that is a multiple of {self.accumulate}")
        if self.val_size and self.long_tailed:
            raise ConfigError(f"--val-size {self.val_size} with --imbalance-ratio {self.imbalance_ratio:g}: the long-"
                              "tailed set keeps every image of its largest class, nothing is left to hold out; drop "
                              "--val-size (or pass 0), e.g. with --config supervised_<dataset>_lt<R>")
        self.check_milestones("lr_milestone_fractions")

    @property
    def val_shape(self) -> EpisodeShape:
        """The shape of the validation episodes (``val_episodes`` > 0)."""
        return EpisodeShape(self.val_way, self.val_shot, self.val_query)

    @property
    def long_tailed(self) -> bool:
        return self.imbalance_ratio > 1.0

    @property
    def validation_size(self) -> int:
        """Images held out for validation: ``val_size``; unset, ``DEFAULT_VAL_SIZE`` for balanced runs."""
        if self.val_size is not None:
            return int(self.val_size)
        return 0 if self.long_tailed or self.fewshot_dataset else DEFAULT_VAL_SIZE

    @property
    def fewshot_dataset(self) -> bool:
        """A few-shot benchmark (class-disjoint splits; its test is episodes, ``fewshot-sla eval``)."""
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

    def run_name(self) -> str:
        lt = f"-lt{self.imbalance_ratio:g}" if self.long_tailed else ""
        loss = self.loss + ("-drw" if self.drw else "")
        return f"{self.dataset}{lt}-{self.mode}-{self.transforms}-{loss}-s{self.seed}"
