"""On-disk uint8 cache of decoded splits, memory-mapped when large (``get_dataset(..., cache_dir=DIR)``
or ``FEWSHOT_SLA_CACHE=DIR``).

One entry is two files in the cache directory, named ``<dataset>-<split>-<digest>`` where the
digest hashes what determines the decoded array apart from the source files (format version,
dataset, split, data root, image size, loader options):

* ``.npy``: the images, plain ``uint8 [N, C, H, W]``, readable with ``np.load(mmap_mode=...)``;
* ``.json``: labels, class names, statistics, meta, the array's shape and byte size, CRC-32 of its
  first and last MiB, and the *fingerprint* of the source (every file under the data root,
  recursively, by relative path, size and mtime; the cache directory itself is left out).

The ``.json`` is the commit marker: a rebuild deletes it first, writes the ``.npy`` (temporary file
and rename), then the ``.json`` (same). An entry is used only when the ``.json`` parses, its
fingerprint equals the source's now, the ``.npy`` has the recorded size, header and checksums;
otherwise it is rebuilt and one ``note:`` line on stderr says why (a missing entry is built
silently). Concurrent processes (torchrun ranks) building the same entry take an exclusive
``flock`` on ``<entry>.lock``: one decodes, the others wait and then read its result.

Memory mapping (``mmap_mode="c"``: copy-on-write, so the tensor is writable, and pages never written
stay shared with the page cache and every other process mapping the file) keeps a process's
resident memory independent of the dataset size. Below :data:`MMAP_AUTO_MIB` the array is read
into memory instead (``mmap=None``, the default; ``True``/``False`` force either).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import NoSpaceError, atomic_write, atomic_write_text
from .base import DataError, ImageDataset

__all__ = ["CACHE_VERSION", "CACHE_ENV", "MMAP_AUTO_MIB", "cache_file", "source_fingerprint", "load_cached",
           "save_cached", "cached_dataset", "resolve_cache_dir"]

CACHE_VERSION = 2
CACHE_ENV = "FEWSHOT_SLA_CACHE"
#: ``mmap=None`` memory-maps arrays of at least this many MiB and reads smaller ones into memory.
MMAP_AUTO_MIB = 64
_CHECK_BYTES = 1 << 20  # CRC-32 of the first and last MiB of the array


def resolve_cache_dir(cache_dir: str | Path | None) -> Path | None:
    """``cache_dir`` if given, else ``$FEWSHOT_SLA_CACHE`` if set and non-empty, else ``None`` (no cache)."""
    if cache_dir is not None and str(cache_dir) != "":
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV, "")
    return Path(env).expanduser() if env else None


def cache_file(cache_dir: str | Path, name: str, split: str, key: Any) -> Path:
    """Path (``.npy``) of the cache entry for ``(name, split, key)`` (``key``: any JSON-able value)."""
    blob = json.dumps([CACHE_VERSION, name, split, key], sort_keys=True, default=str)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{name}-{split}-{digest}.npy"


def source_fingerprint(root: str | Path, exclude: str | Path | None = None) -> str:
    """SHA-1 over every file under ``root`` (relative path, size, mtime in ns), recursively, leaving
    out the folder ``exclude`` (the cache directory when it lies inside the data root)."""
    root = Path(root)
    skip = os.path.realpath(exclude) if exclude is not None else None
    h = hashlib.sha1()
    if root.is_file():
        st = root.stat()
        h.update(f"{root.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        if skip is not None:
            dirnames[:] = [d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) != skip]
        dirnames.sort()
        for fname in sorted(filenames):
            full = os.path.join(dirpath, fname)
            try:
                st = os.stat(full)
            except OSError:  # a dangling link or a file removed meanwhile
                continue
            rel = os.path.relpath(full, root)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _checksums(arr: np.ndarray) -> list[int]:
    flat = arr.reshape(-1).view(np.uint8)
    return [zlib.crc32(flat[:_CHECK_BYTES]), zlib.crc32(flat[-_CHECK_BYTES:])]


def save_cached(path: str | Path, dataset: ImageDataset, fingerprint: str = "") -> Path:
    """Write ``dataset`` as the entry ``path`` (``.npy`` images + ``.json`` record), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    side = _sidecar(path)
    side.unlink(missing_ok=True)  # no record may describe a half-replaced array
    images = np.ascontiguousarray(dataset.images.cpu().numpy())
    atomic_write(path, lambda f: np.save(f, images, allow_pickle=False))
    record = {"version": CACHE_VERSION, "fingerprint": fingerprint, "shape": list(images.shape),
              "dtype": str(images.dtype), "npy_bytes": path.stat().st_size, "crc32": _checksums(images),
              "labels": dataset.labels.cpu().tolist(), "class_names": dataset.class_names, "name": dataset.name,
              "split": dataset.split, "mean": dataset.mean, "std": dataset.std, "meta": dataset.meta}
    atomic_write_text(side, json.dumps(record, default=str))
    return path


def load_cached(path: str | Path, fingerprint: str | None = None,
                mmap: bool | None = None) -> tuple[ImageDataset | None, str]:
    """``(dataset, "")`` from the entry ``path``, or ``(None, why)``: ``why`` is ``"missing"`` when
    there is no entry, else the reason it cannot be used (truncated, corrupt, stale source).
    ``fingerprint``: the source's now (``None``: not compared); ``mmap``: see the module docs."""
    path = Path(path)
    side = _sidecar(path)
    if not side.is_file():
        return None, ("its record file is missing (an interrupted write)" if path.is_file() else "missing")
    try:
        record = json.loads(side.read_text())
        shape, want_bytes = tuple(int(s) for s in record["shape"]), int(record["npy_bytes"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, f"its record {side.name} is unreadable ({type(e).__name__})"
    if record.get("version") != CACHE_VERSION:
        return None, f"it has format version {record.get('version')}, this version writes {CACHE_VERSION}"
    if fingerprint is not None and record.get("fingerprint") != fingerprint:
        return None, "the source files changed since it was written"
    try:
        size = path.stat().st_size
    except OSError:
        return None, "its image array is missing"
    if size != want_bytes:
        return None, f"its image array is truncated or overwritten ({size} of {want_bytes} bytes)"
    nbytes = int(np.prod(shape))
    use_mmap = nbytes >= MMAP_AUTO_MIB * 2**20 if mmap is None else bool(mmap)
    try:
        arr = np.load(path, mmap_mode="c" if use_mmap else None, allow_pickle=False)
    except (OSError, ValueError) as e:
        return None, f"its image array has a bad header ({e})"
    if arr.shape != shape or arr.dtype != np.uint8:
        return None, f"its image array holds {arr.dtype} {arr.shape}, the record says uint8 {shape}"
    if nbytes and _checksums(arr) != list(record.get("crc32", [])):
        return None, "its image array does not match its checksums (corrupt)"
    images = torch.from_numpy(arr)
    labels = torch.as_tensor(record["labels"], dtype=torch.int64)
    ds = ImageDataset(images, labels, record["class_names"], name=record["name"], split=record["split"],
                      mean=record["mean"], std=record["std"], meta=record["meta"])
    return ds, ""


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive ``flock`` on ``<path>.lock`` (released when the block ends or the process dies)."""
    lock = path.with_suffix(".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise DataError(f"data cache folder {path.parent} is not usable ({e.strerror or type(e).__name__}); "
                        f"point cache_dir / ${CACHE_ENV} at a writable folder, or unset it") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def cached_dataset(path: str | Path, fingerprint: Callable[[], str], build: Callable[[], ImageDataset],
                   mmap: bool | None = None) -> ImageDataset:
    """The entry ``path`` if it is valid for the source's ``fingerprint()``, else ``build()`` written
    there first (one ``note:`` line on stderr when an existing entry is replaced) and read back
    (memory-mapped per ``mmap``). The fingerprint recorded is taken after ``build()`` (which may
    download or extract files). Concurrent callers: one builds, the others wait for it."""
    path = Path(path)
    ds, why = load_cached(path, fingerprint(), mmap)
    if ds is not None:
        return ds
    with _locked(path):
        ds, why = load_cached(path, fingerprint(), mmap)  # another process may have built it meanwhile
        if ds is not None:
            return ds
        if why != "missing":
            print(f"note: data cache {path.name} not used: {why}; decoding the source again", file=sys.stderr)
        built = build()
        now = fingerprint()
        try:
            save_cached(path, built, now)
        except NoSpaceError:
            print(f"note: no space left in {path.parent} for the data cache entry {path.name} "
                  f"({built.nbytes / 2**20:.0f} MiB); using the decoded copy in memory", file=sys.stderr)
            return built
        ds, why = load_cached(path, now, mmap)
    if ds is None:  # written but unreadable (disk trouble): the decoded copy is still right
        print(f"note: data cache {path.name} could not be read back ({why}); using the decoded copy",
              file=sys.stderr)
        return built
    return ds
