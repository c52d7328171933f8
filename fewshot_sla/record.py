"""The reproducibility record of an evaluation (``record`` in every ``eval`` JSON), and the rule
deciding which results may be paired.

A record says what was evaluated and how: each checkpoint's SHA-256 and image specification, the
dataset's name, options and split, a fingerprint of the split actually used (its sorted class
list and a hash over its images that does not depend on their order), the episode protocol (way,
shot, query, episodes, seed, support augmentation, inferences) and the package's version and git
commit. Two results may be paired (paired differences, one table row against another) only when
their records agree on :data:`PAIRING_FIELDS`; :func:`record_difference` names the first field
that differs.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["file_sha256", "image_hashes", "split_fingerprint", "package_info", "make_record", "PAIRING_FIELDS",
           "record_difference", "RecordMismatch", "check_pairable"]

#: fields of two records that must be equal for their results to be paired (dotted paths)
PAIRING_FIELDS: tuple[str, ...] = (
    "dataset", "dataset_options", "split", "fingerprint.classes", "fingerprint.images", "fingerprint.sha256",
    "protocol.n_way", "protocol.k_shot", "protocol.n_query", "protocol.episodes", "protocol.seed",
    "protocol.support_augment",
)

_CHUNK = 1 << 20  # bytes read at a time when hashing a file


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def image_hashes(images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> list[str]:
    """One hex BLAKE2b digest per image of ``uint8 [N, C, H, W]`` ``images``: over its class name,
    its shape and its pixels (so a relabelled, resized or edited image hashes differently)."""
    arr = np.ascontiguousarray(images.detach().cpu().numpy())
    lab = labels.detach().cpu().tolist()
    shape = ",".join(str(s) for s in arr.shape[1:]).encode()
    out = []
    for i in range(arr.shape[0]):
        h = hashlib.blake2b(digest_size=16)
        h.update(str(class_names[lab[i]]).encode("utf-8") + b"\0" + shape + b"\0")
        h.update(arr[i].tobytes())
        out.append(h.hexdigest())
    return out


def split_fingerprint(dataset: Any) -> dict[str, Any]:
    """Fingerprint of a loaded split (``images``, ``labels``, ``class_names``): its sorted class list,
    image count, channels and size, and ``sha256`` of its sorted per-image hashes (:func:`image_hashes`):
    the same images in any order (of files on disk, of the tensor) give the same fingerprint."""
    images, labels, names = dataset.images, torch.as_tensor(dataset.labels), list(dataset.class_names)
    joined = "\n".join(sorted(image_hashes(images, labels, names)))
    return {"classes": sorted(str(c) for c in names), "images": int(images.shape[0]),
            "channels": int(images.shape[1]), "image_size": int(images.shape[-1]),
            "sha256": hashlib.sha256(joined.encode()).hexdigest()}


def package_info() -> dict[str, Any]:
    """``{"version", "commit"}`` of the installed package; ``commit`` is the git HEAD of the source
    tree holding it (``None`` outside a git checkout or without git)."""
    from . import __version__

    here = Path(__file__).resolve().parent
    commit = None
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10,
                              check=False)
        if done.returncode == 0 and done.stdout.strip():
            commit = done.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"version": __version__, "commit": commit}


def make_record(*, dataset: str, dataset_options: dict[str, Any], split: str, fingerprint: dict[str, Any],
                protocol: dict[str, Any], checkpoints: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The ``record`` of an eval JSON (see the module docs); ``checkpoints``: one ``{"path", "sha256",
    "image_spec", ...}`` per model."""
    return {"dataset": dataset, "dataset_options": dict(dataset_options), "split": split,
            "fingerprint": fingerprint, "protocol": dict(protocol), "checkpoints": list(checkpoints),
            "package": package_info()}


_MISSING = object()


def _get(record: dict[str, Any], path: str) -> Any:
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def record_difference(a: dict[str, Any], b: dict[str, Any],
                      fields: Sequence[str] = PAIRING_FIELDS) -> tuple[str, Any, Any] | None:
    """``(field, value in a, value in b)`` of the first of ``fields`` on which two records differ
    (a field missing from one of them counts as different), else ``None``."""
    for f in fields:
        va, vb = _get(a, f), _get(b, f)
        if va is _MISSING and vb is _MISSING:
            continue
        if va != vb:
            return f, (None if va is _MISSING else va), (None if vb is _MISSING else vb)
    return None


class RecordMismatch(ValueError):
    """Two results whose records differ in what matters were to be paired (one-line message)."""


def _short(v: Any) -> str:
    text = str(v)
    return text if len(text) <= 60 else text[:57] + "..."


def check_pairable(results: Sequence[tuple[str, dict[str, Any] | None]]) -> None:
    """Raise :class:`RecordMismatch` (one line naming the field and both files) unless every
    ``(name, record)`` agrees with the first one that has a record; ``None`` records (files written
    before records existed) are not checked."""
    first: tuple[str, dict[str, Any]] | None = None
    for name, rec in results:
        if rec is None:
            continue
        if first is None:
            first = (name, rec)
            continue
        diff = record_difference(first[1], rec)
        if diff is not None:
            field, va, vb = diff
            raise RecordMismatch(f"{name} and {first[0]} differ in {field} ({_short(vb)} vs {_short(va)}): their "
                                 "results are not on the same episodes of the same data; evaluate both with the "
                                 "same dataset, split and episode options")
