"""Downloads of the datasets with an official public URL (Omniglot, CIFAR), MD5-checked and
renamed into place; :data:`MANUAL_FILES` says where to get the others' files.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from urllib.request import urlopen

from .base import DATA_ROOT_HINT, DataError, DatasetNotFoundError

__all__ = ["Resource", "RESOURCES", "MANUAL_FILES", "DownloadError", "download_url", "fetch", "manual_instructions"]


class DownloadError(OSError):
    """A download failed (offline, HTTP error); the message says which file to place where."""


@dataclass(frozen=True)
class Resource:
    """One downloadable file: where it comes from and its published MD5."""

    filename: str
    url: str
    md5: str


RESOURCES: dict[str, Resource] = {
    "omniglot-background": Resource(
        "images_background.zip",
        "https://github.com/brendenlake/omniglot/raw/master/python/images_background.zip",
        "68d2efa1b9178cc56df9314c21c6e718",
    ),
    "omniglot-evaluation": Resource(
        "images_evaluation.zip",
        "https://github.com/brendenlake/omniglot/raw/master/python/images_evaluation.zip",
        "6b91aef0f799c5bb55b94e3f2daec811",
    ),
    "cifar10": Resource(
        "cifar-10-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": Resource(
        "cifar-100-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
    ),
}

MANUAL_FILES: dict[str, str] = {
    "mini-imagenet": (
        "mini-ImageNet has no official public download (it is cut from ImageNet). Put "
        "MetaOptNet's pickles miniImageNet_category_split_train_phase_train.pickle, "
        "miniImageNet_category_split_val.pickle and miniImageNet_category_split_test.pickle "
        "(links in github.com/kjunelee/MetaOptNet's README) or learn2learn's "
        "mini-imagenet-cache-train.pkl, mini-imagenet-cache-validation.pkl and "
        "mini-imagenet-cache-test.pkl directly in {root}"
    ),
    "tiered-imagenet": (
        "tieredImageNet has no official public download (it is cut from ImageNet). Put "
        "MetaOptNet's {{train,val,test}}_images.npz and {{train,val,test}}_labels.pkl (links in "
        "github.com/kjunelee/MetaOptNet's README) directly in {root}"
    ),
}


def manual_instructions(name: str, root: str | Path) -> str:
    """Which files to fetch by hand for ``name`` and where to put them."""
    return MANUAL_FILES[name].format(root=root)


def download_url(url: str, dest: str | Path, md5: str | None = None, *, progress: bool = True, timeout: float = 60.0,
                 chunk: int = 1 << 20) -> Path:
    """Download ``url`` to ``dest`` atomically, checking ``md5`` when given.

    Raises ``DownloadError`` (offline, HTTP error) or ``DataError`` (wrong MD5), each one line.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    manual = (f"download it by hand from {url} and save it as {dest}, or {DATA_ROOT_HINT} "
              "to a folder that already holds it")
    out = os.fdopen(fd, "wb")
    try:
        h = hashlib.md5()
        try:
            response = urlopen(url, timeout=timeout)
        except urllib.error.HTTPError as exc:
            raise DownloadError(
                f"cannot download {url} (server answered HTTP {exc.code} {exc.reason}); {manual}"
            ) from None
        except OSError as exc:  # URLError, socket errors, timeouts: no network
            reason = getattr(exc, "reason", exc)
            raise DownloadError(f"cannot download {url} (offline? {reason}); {manual}") from None
        with response, out:
            total = response.headers.get("Content-Length") if response.headers else None
            bar = _progress(total, dest.name, progress)
            try:
                while True:
                    try:
                        block = response.read(chunk)
                    except OSError as exc:
                        raise DownloadError(f"download of {url} broke off ({exc}); run again, or {manual}") from None
                    if not block:
                        break
                    out.write(block)
                    h.update(block)
                    if bar is not None:
                        bar.update(len(block))
            finally:
                if bar is not None:
                    bar.close()
        if md5 is not None and h.hexdigest() != md5.lower():
            raise DataError(f"{url}: downloaded file has MD5 {h.hexdigest()}, expected {md5}; the file was "
                            f"discarded. Run again (the server may have sent an error page), or {manual}")
        os.replace(tmp, dest)
    except BaseException:
        out.close()
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _progress(total: str | None, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=int(total) if total else None, unit="B", unit_scale=True, unit_divisor=1024,
                desc=desc, leave=False)


def fetch(key: str, root: str | Path, *, download: bool, progress: bool = True) -> Path:
    """Path of resource ``key`` (see :data:`RESOURCES`) inside ``root``; downloaded when it is
    missing and ``download`` is true, otherwise :class:`DatasetNotFoundError` naming it."""
    res = RESOURCES[key]
    dest = Path(root) / res.filename
    if dest.is_file():
        return dest
    if not download:
        raise DatasetNotFoundError(f"{dest} not found; pass download=True (--download) to fetch it from {res.url}, "
                                   f"or {DATA_ROOT_HINT}")
    return download_url(res.url, dest, res.md5, progress=progress)
