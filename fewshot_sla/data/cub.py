"""CUB-200-2011 (Wah et al., Caltech 2011; 200 bird species, 11,788 photos), read in place from the
official archive ``CUB_200_2011.tgz`` (streamed: members are read, nothing is extracted) or its
extracted folder ``CUB_200_2011/`` (``images/<NNN.Name>/*.jpg``, ``classes.txt``, ``images.txt``,
``bounding_boxes.txt``).

Splits (Chen et al., ICLR 2019, "A Closer Look at Few-shot Classification", ``filelists/CUB/
write_CUB_filelist.py``): the classes in their official order (``classes.txt``), 0-based index
``i``: ``i % 2 == 0`` base (``train``, 100 classes), ``i % 4 == 1`` ``val`` (50), ``i % 4 == 3``
novel (``test``, 50); ``all`` is every class. Images of a class keep ``images.txt``'s order. Images
are uncropped by default; ``crop="bbox"`` (or ``bbox_crop=True``) cuts each to its bounding box
first. Every image is converted to RGB (:func:`~fewshot_sla.data.images.to_mode`) and resized to
``image_size`` (84 by default, as mini-ImageNet).
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .base import DATA_ROOT_HINT, DATASET_INFO, DataError, DatasetNotFoundError, ImageDataset, resolve_split
from .images import _resample, open_image, to_mode

__all__ = ["CUB_SPLITS", "CUB_CROPS", "split_of_class", "split_class_indices", "CubIndex", "find_cub",
           "read_cub_index", "load_cub"]

CUB_SPLITS = ("train", "val", "test", "all")
CUB_CROPS = ("none", "bbox")
_TOP = "CUB_200_2011"
_ARCHIVES = ("CUB_200_2011.tgz", "CUB_200_2011.tar.gz", "CUB_200_2011.tar")
_META = ("classes.txt", "images.txt", "bounding_boxes.txt")


def split_of_class(index: int) -> str:
    """Chen et al.'s split of the class with 0-based official index ``index``."""
    return "train" if index % 2 == 0 else ("val" if index % 4 == 1 else "test")


def split_class_indices(num_classes: int, split: str) -> list[int]:
    """0-based official indices of the classes of ``split`` (``all``: every class), in order."""
    return [i for i in range(num_classes) if split == "all" or split_of_class(i) == split]


@dataclass
class CubIndex:
    """What the metadata files say: ``classes`` in official order, ``images`` as ``(image id,
    path under images/)`` in ``images.txt`` order, ``boxes[image id] = (x, y, width, height)``."""

    classes: list[str]
    images: list[tuple[int, str]]
    boxes: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)


def _rows(text: str, name: str, fields: int) -> Iterator[tuple[int, list[str]]]:
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(None, fields - 1) if fields == 2 else line.split()
        if len(parts) != fields or not parts[0].isdigit():
            raise DataError(f"CUB {name}:{n}: expected {fields} fields starting with an id, got {line.strip()!r}; "
                            "is this CUB-200-2011's official file?")
        yield n, parts


def read_cub_index(classes: str, images: str, boxes: str | None = None) -> CubIndex:
    """Parse the texts of ``classes.txt``, ``images.txt`` and (optionally) ``bounding_boxes.txt``."""
    by_id = {int(p[0]): p[1].strip() for _, p in _rows(classes, "classes.txt", 2)}
    if sorted(by_id) != list(range(1, len(by_id) + 1)):
        raise DataError("CUB classes.txt: class ids are not 1..N; is this CUB-200-2011's official file?")
    imgs = sorted(((int(p[0]), p[1].strip()) for _, p in _rows(images, "images.txt", 2)))
    out = CubIndex([by_id[i] for i in range(1, len(by_id) + 1)], imgs)
    if boxes is not None:
        for n, p in _rows(boxes, "bounding_boxes.txt", 5):
            try:
                out.boxes[int(p[0])] = tuple(float(v) for v in p[1:])  # type: ignore[assignment]
            except ValueError:
                raise DataError(f"CUB bounding_boxes.txt:{n}: expected '<id> <x> <y> <width> <height>'") from None
    return out


def find_cub(root: str | Path) -> tuple[str, Path]:
    """``("folder", CUB dir)`` or ``("archive", tgz)`` for ``root``: the archive itself, the
    ``CUB_200_2011`` folder, or a folder holding either (the folder is preferred: faster)."""
    root = Path(root).expanduser()
    if root.is_file():
        return "archive", root
    for base in (root, root / _TOP):
        if (base / "classes.txt").is_file() and (base / "images").is_dir():
            return "folder", base
    for name in _ARCHIVES:
        if (root / name).is_file():
            return "archive", root / name
    raise DatasetNotFoundError(
        f"cub: no CUB-200-2011 under {root}: expected {root / _TOP}/ (images/, classes.txt, images.txt) or "
        f"{root / _ARCHIVES[0]} (the official archive); {DATA_ROOT_HINT}"
    )


def _crop_box(box: tuple[float, float, float, float], width: int, height: int, name: str) -> tuple[int, ...]:
    x, y, w, h = box
    left, top = max(0, round(x)), max(0, round(y))
    right, bottom = min(width, round(x + w)), min(height, round(y + h))
    if right <= left or bottom <= top:
        raise DataError(f"cub: bounding box {box} of '{name}' is empty inside its {width}x{height} image; "
                        "drop crop=bbox or fix bounding_boxes.txt")
    return left, top, right, bottom


def _decode(data: bytes, name: str, size: int, resample: str,
            box: tuple[float, float, float, float] | None) -> np.ndarray:
    im = to_mode(open_image(data, name), "RGB")
    if box is not None:
        im = im.crop(_crop_box(box, im.width, im.height, name))
    if im.size != (size, size):
        im = im.resize((size, size), _resample(resample))
    return np.asarray(im, dtype=np.uint8)


def _tar_members(path: Path) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """Stream the regular files of a tar archive in storage order (a gzip is read once, forwards)."""
    try:
        with tarfile.open(path, "r|*") as tar:
            for m in tar:
                if m.isfile():
                    yield tar, m
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cub: {path} is not a readable tar archive ({type(exc).__name__}: {exc}); "
                        "download CUB_200_2011.tgz again") from None


def _archive_meta(path: Path, need_boxes: bool) -> tuple[str, dict[str, str]]:
    """The ``CUB_200_2011/`` prefix inside the archive and the texts of its metadata files."""
    wanted = _META if need_boxes else _META[:2]
    texts: dict[str, str] = {}
    prefix = None
    for tar, m in _tar_members(path):
        head, _, base = m.name.rpartition("/")
        if base in wanted and base not in texts and "/images/" not in f"/{m.name}":
            pre = head + "/" if head else ""
            if prefix is None or pre == prefix:
                prefix = pre
                texts[base] = tar.extractfile(m).read().decode("utf-8")
                if len(texts) == len(wanted):
                    break
    missing = [w for w in wanted if w not in texts]
    if missing:
        raise DataError(f"cub: {path} holds no {', '.join(missing)}; is it CUB-200-2011's official archive?")
    return prefix or "", texts


def load_cub(root: str | Path, split: str, *, image_size: int | None = None, download: bool = False,
             crop: str = "none", bbox_crop: bool = False, resample: str = "bilinear",
             num_workers: int = 0) -> ImageDataset:
    """Load one CUB-200-2011 split (``uint8 [N, 3, S, S]``; see the module docs)."""
    split = resolve_split("cub", split, CUB_SPLITS)
    if download:
        raise ValueError("cub: CUB-200-2011 has no download here; fetch CUB_200_2011.tgz from "
                         "https://www.vision.caltech.edu/datasets/cub_200_2011/ and pass --data-root")
    crop = str(crop).strip().lower()
    if crop not in CUB_CROPS:
        raise ValueError(f"cub: unknown crop '{crop}'; choose one of {', '.join(CUB_CROPS)}")
    use_box = crop == "bbox" or bool(bbox_crop)
    size = DATASET_INFO["cub"].image_size if image_size is None else int(image_size)
    _resample(resample)
    kind, path = find_cub(root)
    if kind == "folder":
        texts = {n: (path / n).read_text("utf-8") for n in _META if use_box or n != "bounding_boxes.txt"}
        prefix = ""
    else:
        prefix, texts = _archive_meta(path, use_box)
    index = read_cub_index(texts["classes.txt"], texts["images.txt"], texts.get("bounding_boxes.txt"))
    class_of = {c: i for i, c in enumerate(index.classes)}
    chosen = split_class_indices(len(index.classes), split)
    label_of = {c: j for j, c in enumerate(chosen)}
    entries: list[tuple[int, str, int]] = []  # (image id, path under images/, label)
    for img_id, rel in index.images:
        cls = rel.split("/", 1)[0]
        if cls not in class_of:
            raise DataError(f"cub: images.txt lists '{rel}' whose folder is not a class of classes.txt")
        if class_of[cls] in label_of:
            entries.append((img_id, rel, label_of[class_of[cls]]))
    entries.sort(key=lambda e: e[2])  # stable: images.txt order within a class
    if use_box:
        absent = [rel for i, rel, _ in entries if i not in index.boxes]
        if absent:
            raise DataError(f"cub: bounding_boxes.txt has no box for '{absent[0]}' ({len(absent)} images); "
                            "drop crop=bbox")
    position = {rel: k for k, (_, rel, _) in enumerate(entries)}
    out = np.empty((len(entries), size, size, 3), dtype=np.uint8)
    done = np.zeros(len(entries), dtype=bool)

    def fill(k: int, data: bytes) -> None:
        img_id, rel, _ = entries[k]
        out[k] = _decode(data, f"{path}:{prefix}images/{rel}" if kind == "archive" else str(path / "images" / rel),
                         size, resample, index.boxes[img_id] if use_box else None)
        done[k] = True

    from ..engine.progress import progress

    with progress(len(entries), f"cub {split}", unit="img") as bar, \
            ThreadPoolExecutor(max(1, int(num_workers))) as pool:
        pending = []

        def submit(k: int, data: bytes) -> None:
            pending.append(pool.submit(fill, k, data))
            if len(pending) >= 256:
                for fut in pending:
                    fut.result()
                    bar.update(1)
                pending.clear()

        if kind == "folder":
            for k, (_, rel, _) in enumerate(entries):
                try:
                    data = (path / "images" / rel).read_bytes()
                except OSError as exc:
                    raise DataError(f"cub: cannot read image '{path / 'images' / rel}' ({exc}); restore the file "
                                    "from the official archive") from None
                submit(k, data)
        else:
            images_prefix, seen = f"{prefix}images/", set()
            for tar, m in _tar_members(path):
                if m.name.startswith(images_prefix):
                    k = position.get(m.name[len(images_prefix):])
                    if k is not None and k not in seen:
                        seen.add(k)
                        submit(k, tar.extractfile(m).read())
        for fut in pending:
            fut.result()
            bar.update(1)
    if not done.all():
        missing = [entries[k][1] for k in np.flatnonzero(~done)]
        raise DataError(f"cub: {path} lacks {len(missing)} images of images.txt (first: '{missing[0]}'); "
                        "is the archive or folder complete?")
    images = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
    labels = torch.as_tensor([e[2] for e in entries], dtype=torch.int64)
    meta = {"source": str(path), "crop": "bbox" if use_box else "none",
            "split_rule": "Chen et al. 2019: class index i % 2 == 0 train, i % 4 == 1 val, i % 4 == 3 test",
            "class_official_index": list(chosen)}
    return ImageDataset(images, labels, [index.classes[i] for i in chosen], name="cub", split=split, meta=meta)

