"""Checks that stop a run with one line instead of training on (or saving) garbage.

:func:`check_finite_loss` is called by the training loops on each step's loss and its parts:
the first NaN or infinite value stops the run with a :class:`NonFiniteLossError` naming the
step, the parts and the learning rate, before anything non-finite is stepped or saved.
(:func:`fewshot_sla.rundir.check_finite_state` refuses checkpoints with non-finite weights.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

__all__ = ["NonFiniteLossError", "check_finite_loss", "check_finite_weights", "solver_failure"]

_HINT = ("lower --lr (or add warm-up), use --amp none if mixed precision was on, or check the data for "
         "NaN/inf values")


class NonFiniteLossError(ValueError):
    """A training loss (or one of its parts) became NaN or infinite."""


def _value(v: float | torch.Tensor) -> float:
    if isinstance(v, torch.Tensor):
        return float(v.detach().float().sum().item()) if v.numel() else 0.0
    return float(v)


def check_finite_loss(step: int, parts: Mapping[str, float | torch.Tensor], lr: float) -> None:
    """Raise :class:`NonFiniteLossError` (one line) if any value of ``parts`` is NaN or infinite.

    ``parts`` maps names (``loss``, ``ce``, ``kl``, ...) to Python numbers or tensors (a tensor
    counts as non-finite when any of its elements is). The message names the step, every part
    (non-finite ones first) and the learning rate, and says what to try. Reads each tensor once
    (a device sync): call it on the values the loop logs anyway.
    """
    values = {name: _value(v) for name, v in parts.items()}
    bad = [name for name, v in values.items() if not math.isfinite(v)]
    if not bad:
        return
    shown = ", ".join(f"{name} {values[name]:.4g}" for name in bad + [n for n in values if n not in bad])
    raise NonFiniteLossError(
        f"non-finite loss at step {step} ({shown}; lr {lr:.4g}): training stopped, the last checkpoint is kept; "
        + _HINT
    )


# what a head's solver raises when it is fed NaN/inf features (qpth's LU failure, torch.linalg errors)
_SOLVER_FAILURES = ("qpth Error", "Cannot perform LU factorization", "linalg.", "singular", "not positive-definite",
                    "not finite")


def solver_failure(step: int, exc: BaseException, lr: float) -> NonFiniteLossError | None:
    """The one-line :class:`NonFiniteLossError` for a head's solver that failed on non-finite
    input (e.g. the SVM head's ``qpth Error: Cannot perform LU factorization on Q`` after the
    features diverged), or ``None`` when ``exc`` is not such a failure (re-raise it then)::

        except RuntimeError as e:
            raise (solver_failure(step, e, lr) or e) from None
    """
    text = " ".join(str(exc).split())
    if not isinstance(exc, (RuntimeError, ValueError)) or not any(m in text for m in _SOLVER_FAILURES):
        return None
    return NonFiniteLossError(
        f"the head's solver failed at step {step} ({text[:120]}; lr {lr:.4g}), which happens when the features "
        "became NaN/inf: training stopped, the last checkpoint is kept; " + _HINT
    )


def check_finite_weights(step: int, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`NonFiniteLossError` (one line) when a floating-point tensor of
    ``state_dict`` holds a NaN or inf after ``step`` steps: called before a checkpoint is written,
    so that no checkpoint ever holds non-finite weights (one device sync)."""
    floats = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    if not floats or bool(torch.stack([torch.isfinite(v).all() for v in floats.values()]).all()):
        return
    name = next(k for k, v in floats.items() if not bool(torch.isfinite(v).all()))
    raise NonFiniteLossError(
        f"the weights became non-finite by step {step} ({name}): training stopped, the last checkpoint is kept; "
        + _HINT
    )
