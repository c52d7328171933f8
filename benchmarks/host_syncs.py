"""Host syncs and host-to-device copies per meta-training step, counted without a GPU.

Runs ``MetaTrainer.train_step`` (episode gather, augmentation, NM-way expansion, backbone, head,
loss, backward, SGD step) with the model and data on PyTorch's ``meta`` device, a stand-in for
a GPU: nothing is computed, but every operation is dispatched as it would be on CUDA, so the
places where the host would wait for the device, or copy data to it, are visible:

* **syncs**: reading a device value on the host (``Tensor.item``/``int``/``float``/``bool``,
  i.e. ``aten._local_scalar_dense``; ``Tensor.tolist``) and ops whose output size depends on
  the data (``nonzero``, ``masked_select``, ``unique``, ...). On ``meta`` their values are
  unknown: scalars read as 0 and data-dependent outputs are empty, which takes the "no error"
  branch of every check.
* **copies**: host -> device ``_to_copy``/``copy_`` (with their ``non_blocking`` flag), tensors
  made on the device from Python data (``torch.tensor``/``torch.as_tensor`` with a device)
  and Python-list indices into device tensors (each one a host-built index tensor, copied).

Each event is attributed to the innermost frame of ``fewshot_sla`` code that caused it. Caveats:
on non-CUDA devices ``torch.nn.functional.one_hot`` checks its input with two ``item()`` calls
that it skips on CUDA (listed as not counted); code that indexes with a boolean mask computed
on the device (qpth's solver behind the ``svm`` head) cannot run on ``meta`` and its row
reports the error instead of counts; the per-step ``tolist`` of the logged values in
``MetaTrainer.train_epoch`` (one sync per step) is outside ``train_step`` and not counted.

    python benchmarks/host_syncs.py                      # table; JSON under runs/
    python benchmarks/host_syncs.py --out benchmarks/results/host_syncs.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import sys
import tempfile
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

_PACKAGE = str(Path(__file__).resolve().parents[1] / "fewshot_sla")
_SYNC_OPS = {"nonzero", "masked_select", "unique", "_unique2", "unique_consecutive", "unique_dim",
             "repeat_interleave", "bincount", "histc", "nonzero_static", "_assert_async", "equal",
             "is_nonzero", "any", "all"}
_DATA_DEPENDENT = {"nonzero", "masked_select", "unique", "_unique2", "unique_consecutive", "unique_dim"}


def _innermost() -> traceback.FrameSummary | None:
    """The innermost frame of ``fewshot_sla`` code on the Python stack."""
    for frame in reversed(traceback.extract_stack()):
        if frame.filename.startswith(_PACKAGE):
            return frame
    return None


def _site() -> str:
    """``file:line function`` of the innermost ``fewshot_sla`` frame."""
    frame = _innermost()
    if frame is None:
        return "(outside fewshot_sla)"
    return f"{Path(frame.filename).relative_to(Path(_PACKAGE).parent)}:{frame.lineno} {frame.name}"


def _one_hot_check() -> bool:
    """The read comes from inside ``F.one_hot`` (a C++ op: the caller's line calls it)."""
    frame = _innermost()
    return frame is not None and "one_hot(" in (frame.line or "")


class Counting(TorchDispatchMode):
    """Counts syncs and host-to-device copies (see the module docs) by call site."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: Counter[str] = Counter()
        self.copies: Counter[str] = Counter()
        self.blocking: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()

    def copy(self, what: str, non_blocking: bool) -> None:
        site = f"{_site()} [{what}]"
        self.copies[site] += 1
        if not non_blocking:
            self.blocking[site] += 1

    def sync(self, what: str) -> None:
        if what in ("item", "tolist") and _one_hot_check():
            self.skipped[f"{_site()} [one_hot check, not on CUDA]"] += 1
            return
        self.syncs[f"{_site()} [{what}]"] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        tensors = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        on_device = any(t.device.type == "meta" for t in tensors)
        if name == "_local_scalar_dense" and on_device:
            self.sync("item")
            return 0 if not args[0].is_floating_point() else 0.0
        if name in _DATA_DEPENDENT and on_device:
            self.sync(name)
            if name == "nonzero":
                return torch.empty((0, args[0].dim()), dtype=torch.long, device="meta")
            return torch.empty((0,), dtype=args[0].dtype, device="meta")
        if name in _SYNC_OPS and on_device and name not in ("any", "all"):
            self.sync(name)
        if name in ("index", "index_put", "index_put_") and on_device and len(args) > 1 and any(
                isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1]):
            self.sync(f"{name} with a boolean mask")  # a nonzero inside: meta cannot run it
        if name in ("_to_copy", "copy_"):
            src = args[1] if name == "copy_" else args[0]
            out = func(*args, **kwargs)
            dst = args[0] if name == "copy_" else out
            if src.device.type == "cpu" and dst.device.type == "meta":
                nb = kwargs.get("non_blocking", args[2] if len(args) > 2 else False)
                self.copy(name, bool(nb))
            return out
        return func(*args, **kwargs)


@contextlib.contextmanager
def counting() -> Iterator[Counting]:
    """The dispatch mode, plus wrappers for what the dispatcher does not see: ``tolist``,
    Python data made into device tensors, and Python-list indices into device tensors (and an
    ``autocast`` that is a no-op on ``meta``)."""
    mode = Counting()
    saved = {"tolist": torch.Tensor.tolist, "getitem": torch.Tensor.__getitem__,
             "tensor": torch.tensor, "as_tensor": torch.as_tensor}

    def tolist(self: torch.Tensor) -> Any:
        if self.device.type == "meta":
            mode.sync("tolist")
            return torch.zeros(self.shape, dtype=self.dtype).tolist()
        return saved["tolist"](self)

    def getitem(self: torch.Tensor, index: Any) -> torch.Tensor:
        if self.device.type == "meta":
            parts = index if isinstance(index, tuple) else (index,)
            if any(isinstance(p, list) for p in parts):
                mode.copy("list index", False)
        return saved["getitem"](self, index)

    def maker(name: str):  # noqa: ANN202
        def make(data: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
            device = kwargs.get("device")
            if device is not None and torch.device(device).type == "meta" and not isinstance(data, torch.Tensor):
                mode.copy(f"torch.{name}(python data)", False)
            return saved[name](data, *args, **kwargs)
        return make

    def autocast(device_type: str, *args: Any, **kwargs: Any) -> Any:  # autocast has no meta device
        return contextlib.nullcontext() if device_type == "meta" else saved["autocast"](device_type, *args, **kwargs)

    saved["autocast"] = torch.autocast
    torch.autocast = autocast
    torch.Tensor.tolist = tolist
    torch.Tensor.__getitem__ = getitem
    torch.tensor, torch.as_tensor = maker("tensor"), maker("as_tensor")
    try:
        with mode:
            yield mode
    finally:
        torch.Tensor.tolist, torch.Tensor.__getitem__ = saved["tolist"], saved["getitem"]
        torch.tensor, torch.as_tensor = saved["tensor"], saved["as_tensor"]
        torch.autocast = saved["autocast"]


def count_step(args: argparse.Namespace, mode: str, head: str, steps: int = 2) -> dict[str, Any]:
    """Counts of the last of ``steps`` training steps (the first builds the per-device caches)."""
    from fewshot_sla.meta.config import MetaTrainConfig
    from fewshot_sla.meta.train import MetaTrainer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from synthetic import synthetic_dataset  # the tests' fixture dataset

    data = synthetic_dataset(max(16, args.n_way), args.k_shot + args.n_query + 2, args.image_size, args.channels)
    cfg = MetaTrainConfig(
        dataset="folder", backbone=args.backbone, head=head, mode=mode,
        transforms="none" if mode == "baseline" else args.transforms, image_size=args.image_size,
        n_way=args.n_way, k_shot=args.k_shot, n_query=args.n_query, tasks_per_batch=args.tasks_per_batch,
        accumulate=args.accumulate, episodes_per_epoch=args.tasks_per_batch * steps, val_episodes=0,
        augment=args.augment, device="cpu", quiet=True,
    )
    meta = torch.device("meta")
    with tempfile.TemporaryDirectory() as d:
        trainer = MetaTrainer(dataclasses.replace(cfg, run_dir=str(Path(d) / "run"), test_episodes=0), {"train": data})
        # built on the CPU (the config accepts no meta device), then moved as a GPU run has it:
        # model and images on the device (--data-on-device, the default)
        trainer.device = meta
        trainer.model.to(meta)
        with counting():  # (its label checks read meta values: not part of a step)
            trainer.train_ds = trainer.train_ds.to(meta)
        trainer.model.train()
        for _ in range(steps - 1):
            with counting():
                trainer.train_step()
        with counting() as c:
            trainer.train_step()
    return {"mode": mode, "head": head, "backbone": args.backbone, "augment": args.augment,
            "transforms": cfg.transforms, "tasks_per_batch": args.tasks_per_batch, "accumulate": args.accumulate,
            "syncs": sum(c.syncs.values()), "copies": sum(c.copies.values()),
            "blocking_copies": sum(c.blocking.values()),
            "sync_sites": dict(c.syncs), "copy_sites": dict(c.copies), "not_counted": dict(c.skipped)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="resnet12")
    p.add_argument("--heads", nargs="+", default=["protonet", "ridge"])
    p.add_argument("--modes", nargs="+", default=["sla", "sla+sd"])
    p.add_argument("--transforms", default="rotation")
    p.add_argument("--augment", default="metaoptnet")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--n-way", type=int, default=5)
    p.add_argument("--k-shot", type=int, default=5)
    p.add_argument("--n-query", type=int, default=6)
    p.add_argument("--tasks-per-batch", type=int, default=8)
    p.add_argument("--accumulate", type=int, default=1)
    p.add_argument("--out", default="runs/benchmarks/host_syncs.json", help="JSON output (default under runs/)")
    p.add_argument("--sites", action="store_true", help="also print every call site")
    a = p.parse_args(argv)

    rows = []
    for head in a.heads:
        for mode in a.modes:
            try:
                rows.append(count_step(a, mode, head))
            except Exception as e:  # noqa: BLE001 - a head that cannot run on meta is reported, not fatal
                rows.append({"mode": mode, "head": head, "error": f"{type(e).__name__}: {e}"})
    print(f"per training step: {a.backbone} {a.image_size}px, {a.n_way}-way {a.k_shot}-shot, "
          f"{a.tasks_per_batch} tasks, --accumulate {a.accumulate}, --augment {a.augment}, {a.transforms}")
    print(f"{'head':<9} {'mode':<7} {'syncs':>6} {'copies':>7} {'blocking':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['head']:<9} {r['mode']:<7} could not run on meta: {r['error'][:90]}")
            continue
        print(f"{r['head']:<9} {r['mode']:<7} {r['syncs']:>6} {r['copies']:>7} {r['blocking_copies']:>9}")
        if a.sites:
            for kind in ("sync_sites", "copy_sites", "not_counted"):
                for site, n in sorted(r[kind].items()):
                    print(f"    {kind[:-6]:<11} {n:>3}  {site}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": "meta (stand-in for CUDA)"}
    out.write_text(json.dumps({"env": env, "argv": sys.argv[1:], "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
