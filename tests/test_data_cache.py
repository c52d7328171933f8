"""The on-disk uint8 cache (fewshot_sla.data.cache): a memory-mapped split equals the freshly decoded
one image for image, a changed source is decoded again, a truncated or corrupt entry is detected and
rebuilt with one note, concurrent builders decode once, and episodes drawn from a memory-mapped
split equal those from the in-memory one."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fewshot_sla.data.cache as cache_mod
from fewshot_sla.data import get_dataset
from fewshot_sla.data.cache import cached_dataset, source_fingerprint
from fewshot_sla.episodes import EpisodeSampler, collate_episodes, expand_episodes

RNG = np.random.default_rng(28)
SIZE = 12


def make_folder(root: Path, classes: int = 6, per_class: int = 5) -> dict[str, list[np.ndarray]]:
    """``<class>/<i>.png`` RGB images of SIZE px; returns the arrays written (HWC)."""
    out = {}
    for c in range(classes):
        name = f"class{c:02d}"
        (root / name).mkdir(parents=True)
        out[name] = []
        for i in range(per_class):
            a = RNG.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            Image.fromarray(a).save(root / name / f"{i:03d}.png")
            out[name].append(a)
    return out


def mapped_from(t: torch.Tensor, path: Path) -> bool:
    """Whether ``t``'s memory lies in a mapping of the file ``path`` (from /proc/self/maps)."""
    ptr, want = t.data_ptr(), str(path.resolve())
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5] == want:
            lo, hi = (int(v, 16) for v in parts[0].split("-"))
            if lo <= ptr < hi:
                return True
    return False


def entry(cache: Path) -> Path:
    (npy,) = cache.glob("*.npy")
    return npy


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    arrays = make_folder(root)
    return root, arrays, tmp_path / "cache"


def test_memory_mapped_split_equals_decoded_image_for_image(data):
    root, arrays, cache = data
    ref = get_dataset("folder", root, "all")  # decoded in memory, no cache
    mapped = get_dataset("folder", root, "all", cache_dir=cache, mmap=True)
    assert mapped_from(mapped.images, entry(cache))  # really a mapping of the .npy
    assert not mapped_from(ref.images, entry(cache))
    assert len(mapped) == len(ref) == 30
    for i in range(len(ref)):
        x, y = mapped[i]
        assert torch.equal(x, ref.images[i]) and y == int(ref.labels[i])
        # and against the PNG written (independent of either loader)
        assert torch.equal(x, torch.from_numpy(arrays[ref.class_names[y]][i % 5]).permute(2, 0, 1))
    assert mapped.class_names == ref.class_names and mapped.meta == ref.meta
    assert mapped.mean == ref.mean and mapped.std == ref.std
    # copy-on-write: writing into the mapped tensor never reaches the file or other readers
    mapped.images[0].zero_()
    again = get_dataset("folder", root, "all", cache_dir=cache, mmap=True)
    assert torch.equal(again.images, ref.images)


def test_auto_rule_reads_small_arrays_into_memory(data, monkeypatch):
    root, _, cache = data
    get_dataset("folder", root, "all", cache_dir=cache)  # builds the entry
    small = get_dataset("folder", root, "all", cache_dir=cache)  # 13 KiB < MMAP_AUTO_MIB: in memory
    assert not mapped_from(small.images, entry(cache))
    monkeypatch.setattr(cache_mod, "MMAP_AUTO_MIB", 0)
    big = get_dataset("folder", root, "all", cache_dir=cache)
    assert mapped_from(big.images, entry(cache)) and torch.equal(big.images, small.images)
    forced = get_dataset("folder", root, "all", cache_dir=cache, mmap=False)
    assert not mapped_from(forced.images, entry(cache)) and torch.equal(forced.images, small.images)


def test_unchanged_source_is_not_decoded_and_changed_source_is(data, monkeypatch, capsys):
    root, arrays, cache = data
    first = get_dataset("folder", root, "all", cache_dir=cache)
    import fewshot_sla.data.registry as reg

    calls = []
    real_build = reg.DATASETS.build

    def counting(*a, **k):
        calls.append(a[0])
        return real_build(*a, **k)

    monkeypatch.setattr(reg.DATASETS, "build", counting)
    again = get_dataset("folder", root, "all", cache_dir=cache)
    assert calls == [] and torch.equal(again.images, first.images)
    # rewrite one image (same size on disk is irrelevant: the mtime changes)
    new = 255 - arrays["class03"][2]
    target = root / "class03" / "002.png"
    Image.fromarray(new).save(target)
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = get_dataset("folder", root, "all", cache_dir=cache)
    assert calls == ["folder"]
    note = capsys.readouterr().err.strip().splitlines()
    assert len(note) == 1 and note[0].startswith("note: data cache") and "source files changed" in note[0]
    i = changed.class_names.index("class03") * 5 + 2
    assert torch.equal(changed.images[i], torch.from_numpy(new).permute(2, 0, 1))
    assert torch.equal(changed.images, get_dataset("folder", root, "all").images)
    # other decode parameters -> another entry, never the 12 px one
    resized = get_dataset("folder", root, "all", cache_dir=cache, image_size=8)
    assert resized.images.shape[-1] == 8 and len(list(cache.glob("*.npy"))) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip", "record", "no_record"])
def test_damaged_entry_is_detected_and_rebuilt_with_one_note(data, capsys, damage):
    root, _, cache = data
    ref = get_dataset("folder", root, "all")
    get_dataset("folder", root, "all", cache_dir=cache)
    npy = entry(cache)
    full = npy.stat().st_size
    if damage == "truncate":
        with open(npy, "r+b") as f:
            f.truncate(full // 2)
        why = "truncated"
    elif damage == "flip":  # same size, a pixel byte changed
        with open(npy, "r+b") as f:
            f.seek(full - 100)
            b = f.read(1)
            f.seek(full - 100)
            f.write(bytes([b[0] ^ 0xFF]))
        why = "checksums"
    elif damage == "record":
        npy.with_suffix(".json").write_text('{"version": 2, "shape": [30')
        why = "unreadable"
    else:
        npy.with_suffix(".json").unlink()
        why = "record file is missing"
    capsys.readouterr()
    got = get_dataset("folder", root, "all", cache_dir=cache, mmap=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: data cache ") and why in err[0], err
    assert torch.equal(got.images, ref.images) and torch.equal(got.labels, ref.labels)
    assert npy.stat().st_size == full and json.loads(npy.with_suffix(".json").read_text())["npy_bytes"] == full
    get_dataset("folder", root, "all", cache_dir=cache)
    assert capsys.readouterr().err == ""  # rebuilt entry is used silently


def test_episodes_from_memory_mapped_split_are_identical(data):
    root, _, cache = data
    mem = get_dataset("folder", root, "all")
    mapped = get_dataset("folder", root, "all", cache_dir=cache, mmap=True)
    assert mapped_from(mapped.images, entry(cache))
    s1 = EpisodeSampler(mem.labels, 3, 1, 2, n_episodes=6, seed=5)
    s2 = EpisodeSampler(mapped.labels, 3, 1, 2, n_episodes=6, seed=5)
    e1, e2 = list(s1), list(s2)
    assert e1 == e2
    for tset in ("rotation", "rot_color_perm12"):
        a = expand_episodes(collate_episodes(mem.images, e1, 3, 1, 2), tset)
        b = expand_episodes(collate_episodes(mapped.images, e2, 3, 1, 2), tset)
        for f in ("support", "support_labels", "query", "query_labels"):
            assert torch.equal(getattr(a, f), getattr(b, f))
        # and by hand: support row 0 is dataset image e1[0][0]
        assert torch.equal(a.support[0, 0], mem.images[e1[0][0]])


def test_environment_variable_names_the_cache_folder(data, monkeypatch):
    root, _, cache = data
    monkeypatch.setenv("FEWSHOT_SLA_CACHE", str(cache))
    ds = get_dataset("folder", root, "all")
    assert len(list(cache.glob("*.npy"))) == 1 and torch.equal(ds.images, get_dataset("folder", root, "all",
                                                                                       cache_dir="").images)
    monkeypatch.setenv("FEWSHOT_SLA_CACHE", "")
    other = root.parent / "other"
    get_dataset("folder", root, "all")
    assert not other.exists()


def test_fingerprint_sees_deep_files_and_leaves_out_the_cache(tmp_path):
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "x.png").write_bytes(b"1")
    (root / "cache").mkdir()
    fp = source_fingerprint(root, exclude=root / "cache")
    (root / "cache" / "entry.npy").write_bytes(b"abc")
    assert source_fingerprint(root, exclude=root / "cache") == fp
    (root / "a" / "b" / "x.png").write_bytes(b"2")  # same size, new mtime
    os.utime(root / "a" / "b" / "x.png", ns=(0, 1))
    assert source_fingerprint(root, exclude=root / "cache") != fp


def test_concurrent_builders_decode_once(tmp_path):
    """Two callers (own lock descriptors, as two ranks have) ask for a missing entry at once: one
    decodes while the other waits on the lock, then reads the entry written."""
    images = torch.randint(0, 256, (8, 1, 4, 4), dtype=torch.uint8)
    from fewshot_sla.data import ImageDataset

    builds = []

    def build():
        builds.append(threading.get_ident())
        time.sleep(0.3)
        return ImageDataset(images, torch.arange(8) % 2, ["a", "b"], name="synthetic", split="train")

    path = tmp_path / "c" / "synthetic-train-x.npy"
    out = [None, None]

    def worker(i):
        out[i] = cached_dataset(path, lambda: "fp", build, mmap=True)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert all(torch.equal(o.images, images) for o in out)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.with_suffix(s).name for s in (".json", ".lock",
                                                                                                ".npy")]


def test_unusable_cache_folder_is_one_line_and_full_disk_falls_back(data, monkeypatch, capsys):
    root, _, cache = data
    (root.parent / "afile").write_text("x")
    from fewshot_sla.data import DataError

    with pytest.raises(DataError, match=r"data cache folder .*afile.* is not usable .*writable folder"):
        get_dataset("folder", root, "all", cache_dir=root.parent / "afile" / "cache")
    from fewshot_sla.atomic import NoSpaceError

    def full(*a, **k):
        raise NoSpaceError("no space left")

    monkeypatch.setattr(cache_mod, "save_cached", full)
    got = get_dataset("folder", root, "all", cache_dir=cache)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: no space left") and "decoded copy" in err[0]
    assert torch.equal(got.images, get_dataset("folder", root, "all").images)
    assert not list(cache.glob("*.npy"))


_RANK_SCRIPT = """
import sys, time, os
from pathlib import Path
import torch
from fewshot_sla.data import ImageDataset
from fewshot_sla.data.cache import cached_dataset

folder, me = Path(sys.argv[1]), sys.argv[2]
(folder / f"ready-{me}").touch()
while len(list(folder.glob("ready-*"))) < 2:  # both processes ask at the same moment
    time.sleep(0.01)

def build():
    with open(folder / "builds.txt", "a") as f:
        f.write(me + "\\n")
    time.sleep(1.0)
    images = torch.arange(8 * 16, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(8, 1, 4, 4)
    return ImageDataset(images, torch.arange(8) % 2, ["a", "b"], name="synthetic", split="train")

ds = cached_dataset(folder / "cache" / "synthetic-train-x.npy", lambda: "fp", build, mmap=True)
print(int(ds.images.sum()))
"""


def test_two_processes_decode_once(tmp_path):
    """Two processes (as two torchrun ranks on a node) ask for a missing entry at the same moment:
    exactly one runs the decode, both get the same images."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", _RANK_SCRIPT, str(tmp_path), str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert len((tmp_path / "builds.txt").read_text().split()) == 1
    want = int(torch.arange(8 * 16).remainder(256).sum())
    assert [int(o[0].strip()) for o in outs] == [want, want]
