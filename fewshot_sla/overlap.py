"""Train/test overlap: a checkpoint records the classes it was trained on (``data["train_classes"]``:
the dataset, the split that defined them, the dataset options and the class names), and ``eval``
refuses a split sharing classes with them (one line naming how many, which, and the option that
caused it) unless ``--allow-overlap``.

Class names are compared by :func:`class_key`: Omniglot's ``<Alphabet>/<character>`` whatever the
dataset options (a rotated class ``<Alphabet>/<character>/rot90`` maps back to its character), within
its official part (``background`` or ``evaluation``, whose alphabets differ), other datasets' names as
they are.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from .config import ConfigError, options_text

__all__ = ["source_part", "training_classes", "class_key", "shared_classes", "check_overlap"]

_ROTATED = re.compile(r"/rot(0|90|180|270)$")


def source_part(dataset: str, split: str, options: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> str:
    """The part of the source a split's classes come from (Omniglot: ``background``/``evaluation``,
    from the loaded data's ``meta["part"]`` or as :func:`~fewshot_sla.data.omniglot.load_omniglot`
    chooses it), ``""`` for datasets whose class names are unique."""
    if dataset != "omniglot":
        return ""
    if meta and meta.get("part"):
        return str(meta["part"])
    return "evaluation" if split == "evaluation" or (split == "test" and not options.get("test_alphabets")) \
        else "background"


def training_classes(dataset: str, split: str, options: Mapping[str, Any], names: Sequence[Any],
                     meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint's record of its training classes (plain containers only)."""
    return {"dataset": str(dataset), "split": str(split), "options": dict(options),
            "part": source_part(dataset, split, options, meta), "names": [str(n) for n in names]}


def class_key(dataset: str, name: str) -> str:
    """``name`` comparable across dataset options (Omniglot: the rotation suffix dropped)."""
    return _ROTATED.sub("", str(name)) if dataset == "omniglot" else str(name)


def shared_classes(record: Mapping[str, Any], dataset: str, names: Sequence[Any],
                   part: str = "") -> tuple[list[str], int]:
    """(sorted keys of ``names`` (classes of ``part``) that are training classes of ``record``, number of
    distinct keys of ``names``)."""
    keys = {class_key(dataset, n) for n in names}
    if record.get("dataset") != dataset or record.get("part", "") != part:
        return [], len(keys)
    trained = {class_key(dataset, n) for n in record.get("names", ())}
    return sorted(keys & trained), len(keys)


def listing(names: Sequence[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def check_overlap(data: Mapping[str, Any], dataset_obj: Any, dataset: str, split: str, options: Mapping[str, Any],
                  source: Any, allow: bool = False, notes: bool = True) -> None:
    """Refuse (one-line :class:`ConfigError`) evaluating ``split`` of ``dataset`` (loaded with ``options``
    as ``dataset_obj``) when it shares classes with the training classes recorded in a checkpoint's
    ``data``; a checkpoint without the record, or ``allow``, gets a one-line note on stderr instead
    (``notes=False``: none, e.g. on the other processes of a torchrun job)."""
    record = data.get("train_classes")
    if not isinstance(record, Mapping):
        if notes:
            print(f"note: {source} does not record its training classes (written by an earlier version); whether "
                  f"the {split} split shares classes with them was not checked", file=sys.stderr)
        return
    part = source_part(dataset, split, options, getattr(dataset_obj, "meta", None))
    shared, total = shared_classes(record, dataset, list(dataset_obj.class_names), part)
    if not shared:
        return
    if allow:
        if notes:
            print(f"note: the {split} split shares {len(shared)} of its {total} classes with {source}'s training "
                  "classes (--allow-overlap)", file=sys.stderr)
        return
    what = f"{len(shared)} of its {total} classes"
    if dataset == "omniglot":  # name the alphabets: the unit of Omniglot's splits
        alphabets = sorted({k.split("/")[0] for k in shared})
        what = (f"{len(alphabets)} alphabet{'s' * (len(alphabets) != 1)} ({len(shared)} of its {total} "
                f"characters: {listing(alphabets)})")
    else:
        what += f" ({listing(shared)})"
    trained = dict(record.get("options") or {})
    changed = {k: v for k, v in options.items() if trained.get(k) != v}
    cause = f"--dataset-options {options_text(changed)}: " if changed else ""
    opts = f" with {options_text(trained)}" if trained else " with the default dataset options"
    raise ConfigError(f"{cause}the {split} split of {dataset} shares {what} with the classes {source} trained on "
                      f"(its {record.get('split')} split{opts}); evaluate a split it did not train on, or pass "
                      "--allow-overlap to evaluate anyway")
