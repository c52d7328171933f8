"""The training engine shared by meta-training (:mod:`fewshot_sla.meta`) and the supervised
pipeline (:mod:`fewshot_sla.supervised`).

* :mod:`.trainer` -- :class:`Trainer`, the one lifecycle (session, seeding, model placement,
  optimiser and schedule, steps, validation and best tracking, checkpoints, resume, summary);
* :mod:`.session` -- device, threads, the torchrun process group, CUDA backends
  (``--deterministic``), the run directory (refusal and resume checks);
* :mod:`.step` -- :class:`ChunkedStep`: one optimiser step over gradient chunks (per-chunk
  seeding, DDP ``no_sync``, frozen BatchNorm statistics after the first chunk, one all-reduce);
* :mod:`.checkpoint` -- the one checkpoint format and :func:`load_model`, which rebuilds the
  model of any checkpoint of either pipeline;
* :mod:`.resume` -- the one ``--resume`` config rule (which options may change);
* :mod:`.precision` -- ``--amp none|bf16|fp16``; :mod:`.progress` -- progress bars;
  :mod:`.shard` -- evaluation split across processes and gathered in order.

A pipeline subclasses :class:`Trainer` and supplies what differs: its data and model, the chunks
of a step and a chunk's loss, validation, its part of the checkpoint and the summary.
"""

from .checkpoint import FORMAT, LoadedModel, load_model, make_checkpoint, read_checkpoint, upgrade
from .precision import AMP_MODES, amp_dtype, autocast, normalize_amp
from .progress import progress
from .resume import resume_config
from .session import Session, claim_run_dir, configure_backends, start_session
from .shard import run_sharded, shard_indices
from .step import ChunkedStep
from .trainer import Trainer, Validation, checkpoint_step

__all__ = [
    "AMP_MODES",
    "FORMAT",
    "ChunkedStep",
    "LoadedModel",
    "Session",
    "Trainer",
    "Validation",
    "amp_dtype",
    "autocast",
    "checkpoint_step",
    "configure_backends",
    "load_model",
    "make_checkpoint",
    "normalize_amp",
    "claim_run_dir",
    "progress",
    "read_checkpoint",
    "resume_config",
    "run_sharded",
    "shard_indices",
    "start_session",
    "upgrade",
]
