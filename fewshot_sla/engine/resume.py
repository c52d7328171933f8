"""The one ``--resume`` rule of both pipelines: a resumed run keeps its saved config, except the
options that cannot change its numbers (device, threads, data location, length, ...)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from ..config import ConfigError, config_from_dict, flag, resume_options
from ..distributed import env_info
from ..rundir import RunDir
from ..runlock import check_not_locked

__all__ = ["resume_config"]

C = TypeVar("C")


def _flags(names: Any) -> str:
    return ", ".join(map(flag, names))


def resume_config(cls: type[C], run_dir: str | Path, overrides: dict[str, Any] | None,
                  reset: dict[str, Any] | None = None) -> C:
    """The config of the run in ``run_dir`` with the ``overrides`` that ``--resume`` may change applied.

    Args:
        cls: the pipeline's config dataclass (its ``run_dir`` field is set to ``run_dir``).
        overrides: options given with ``--resume``; one not marked ``resume`` in ``cls``'s field
            metadata (:func:`~fewshot_sla.config.resume_options`) that differs from the saved
            value is refused in one line (it would change the run's numbers).
        reset: values applied before the overrides (per-invocation options such as
            ``stop_after = 0``).
    """
    allowed = resume_options(cls)
    run = Path(run_dir)
    if env_info().is_main:  # a live run holds it: name its PID (before "no checkpoint yet", say)
        check_not_locked(run)
    RunDir(run, enabled=False).require_checkpoint("--resume")  # one line: why it cannot be resumed
    source = str(run / "config.json")
    data = json.loads((run / "config.json").read_text())
    overrides = {k: v for k, v in (overrides or {}).items() if k != "run_dir"}
    saved = config_from_dict(cls, data, source=source, notes=False)
    asked = config_from_dict(cls, {**data, **overrides}, source="--resume options")
    bad = sorted(k for k in overrides if k not in allowed and hasattr(saved, k)
                 and getattr(saved, k) != getattr(asked, k))
    if bad:
        raise ConfigError(f"--resume cannot change {_flags(bad)} (it would change the run's numbers); only "
                          f"{_flags(allowed)} may be given with --resume, or start a new run with another --run-dir")
    data.update(reset or {})
    data.update({k: v for k, v in overrides.items() if k in allowed})
    data["run_dir"] = str(run_dir)
    return config_from_dict(cls, data, source=source, notes=False)
