"""Speed of one MAML meta-training step: ``fewshot_sla.meta.gradient`` (torch.func; tasks in a loop
or under vmap) against a per-task Python loop that clones the model as learn2learn does, and
learn2learn itself where it is installed (``tests/l2l_import.py`` loads its algorithms subpackage
without the torchvision/gym imports of its ``__init__``; ``bash .ci/install_learn2learn.sh``).

The step: Finn et al.'s Omniglot Conv-4 (64 filters, stride-2 convolutions without max-pooling, conv
biases, BatchNorm on batch statistics: learn2learn's ``OmniglotCNN``), Omniglot-sized 28 px grey images,
5-way 1-shot, 15 queries per class, 32 tasks, inner lr 0.4; 1 and 5 inner steps second order and 1
step first order; forward (inner loops and query losses), backward, one Adam step. Each
(implementation, setting) runs in its own process, so that its peak resident memory (CPU) or peak
CUDA memory is its own. The first (warm-up, untimed) step's meta-gradient, at the shared initial
weights and tasks, is compared with ``ours-loop``'s (``grad_rel_diff``: max abs difference / max
abs gradient; run ``ours-loop`` first in each setting, it is the reference and shows 0).

    OMP_NUM_THREADS=1 python benchmarks/maml_speed.py                       # CPU, one thread
    python benchmarks/maml_speed.py --device cuda --impl ours-vmap ours-loop clone-loop

Writes ``runs/benchmarks/maml_speed.json``; ``--out`` for a committed result.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fewshot_sla.backbones.conv4 import Conv4
from fewshot_sla.episodes import EpisodeBatch
from fewshot_sla.meta.gradient import GradientModel
from fewshot_sla.meta.methods import LossSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from l2l_import import import_learn2learn  # noqa: E402 - learn2learn's algorithms, without torchvision and gym

WAYS, SHOTS, QUERIES, TASKS, SIZE, INNER_LR = 5, 1, 15, 32, 28, 0.4
SETTINGS = {"1-step": (1, False), "5-step": (5, False), "1-step-fo": (1, True)}
IMPLS = ("ours-loop", "ours-vmap", "clone-loop", "learn2learn")
#: learn2learn's MAML on this step, one thread, as recorded on this machine for issue 27 (s per step)
RECORDED_L2L = {"1-step": 1.17, "5-step": 2.40, "1-step-fo": 1.02}
#: Finn et al.'s Omniglot network (stride-2 convolutions, no max-pooling, conv biases), as learn2learn's
#: ``OmniglotCNN`` and the maml_omniglot_conv4* configs
NET = {"conv_bias": True, "strided": True}


def _tasks(device: torch.device, tasks: int) -> EpisodeBatch:
    g = torch.Generator().manual_seed(0)
    ys = torch.arange(WAYS).repeat_interleave(SHOTS).expand(tasks, -1).contiguous()
    yq = torch.arange(WAYS).repeat_interleave(QUERIES).expand(tasks, -1).contiguous()
    xs = torch.randn(tasks, WAYS * SHOTS, 1, SIZE, SIZE, generator=g)
    xq = torch.randn(tasks, WAYS * QUERIES, 1, SIZE, SIZE, generator=g)
    return EpisodeBatch(xs, ys, xq, yq, WAYS).to(device)


def _ours(steps: int, first_order: bool, batching: str) -> GradientModel:
    torch.manual_seed(0)
    return GradientModel(Conv4(1, image_size=SIZE, **NET), "maml", "baseline", "none", WAYS, INNER_LR, steps, steps,
                         first_order, False, "learned", batching)


def _plain(model: GradientModel) -> nn.Module:
    """The same weights as a plain ``nn.Sequential`` (native BatchNorm2d in training mode)."""
    torch.manual_seed(0)
    net = nn.Sequential(Conv4(1, image_size=SIZE, **NET), nn.Linear(model.backbone.out_dim, WAYS))
    net.load_state_dict({k.replace("backbone.", "0.").replace("classifier.", "1."): v
                         for k, v in model.state_dict().items()}, strict=False)
    return net


def _clone(module: nn.Module) -> nn.Module:
    """learn2learn's ``clone_module``: a shallow copy whose parameters are differentiable clones."""
    new = copy.copy(module)
    new._parameters = {k: None if p is None else p.clone() for k, p in module._parameters.items()}
    new._buffers = dict(module._buffers)
    new._modules = {k: _clone(m) for k, m in module._modules.items()}
    return new


def _update(module: nn.Module, grads: dict[int, torch.Tensor], lr: float) -> None:
    """learn2learn's ``update_module``: ``p <- p - lr * g`` in place of each (cloned) parameter."""
    for m in module.modules():
        for k, p in m._parameters.items():
            if p is not None:
                m._parameters[k] = p - lr * grads[id(p)]


def _clone_loss(net: nn.Module, batch: EpisodeBatch, steps: int, first_order: bool) -> torch.Tensor:
    losses = []
    for t in range(batch.support.shape[0]):
        learner = _clone(net)
        for _ in range(steps):
            params = [p for m in learner.modules() for p in m._parameters.values() if p is not None]
            loss = F.cross_entropy(learner(batch.support[t]), batch.support_labels[t])
            grads = torch.autograd.grad(loss, params, create_graph=not first_order)
            _update(learner, {id(p): g for p, g in zip(params, grads)}, INNER_LR)
        losses.append(F.cross_entropy(learner(batch.query[t]), batch.query_labels[t]))
    return torch.stack(losses).mean()


def _l2l_loss(maml, batch: EpisodeBatch, steps: int) -> torch.Tensor:  # noqa: ANN001 - learn2learn.algorithms.MAML
    losses = []
    for t in range(batch.support.shape[0]):
        learner = maml.clone()
        for _ in range(steps):
            learner.adapt(F.cross_entropy(learner(batch.support[t]), batch.support_labels[t]))
        losses.append(F.cross_entropy(learner(batch.query[t]), batch.query_labels[t]))
    return torch.stack(losses).mean()


def _step_fn(impl: str, setting: str, device: torch.device):
    """``(parameters, loss_fn)`` of ``impl`` for ``setting``, on ``device``."""
    steps, fo = SETTINGS[setting]
    ours = _ours(steps, fo, "vmap" if impl == "ours-vmap" else "loop").to(device)
    if impl.startswith("ours"):
        return list(ours.parameters()), lambda b: ours.run_episodes(b, LossSettings()).loss
    net = _plain(ours).to(device).train()
    if impl == "clone-loop":
        return list(net.parameters()), lambda b: _clone_loss(net, b, steps, fo)
    maml = import_learn2learn().algorithms.MAML(net, lr=INNER_LR, first_order=fo)
    return list(maml.parameters()), lambda b: _l2l_loss(maml, b, steps)


def run_one(impl: str, setting: str, device: torch.device, repeats: int, tasks: int, ref_file: Path) -> dict:
    """Time ``repeats`` meta-steps of one implementation after a first step whose meta-gradient (at the
    initial weights) is compared with the reference's (``ours-loop``, saved in ``ref_file``)."""
    batch = _tasks(device, tasks)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    params, loss_fn = _step_fn(impl, setting, device)
    opt = torch.optim.Adam(params, lr=1e-3)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fwd = bwd = 0.0
    diff = None
    for i in range(repeats + 1):
        sync()
        t0 = time.perf_counter()
        loss = loss_fn(batch)
        sync()
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if i == 0:  # the first step warms up; its gradient is at the shared initial weights
            grads = [p.grad.detach().cpu().clone() for p in params]
            if impl == "ours-loop":
                torch.save(grads, ref_file)
            if ref_file.exists():
                ref = torch.load(ref_file)
                scale = max(float(g.abs().max()) for g in ref)
                diff = max(float((a - b).abs().max()) for a, b in zip(grads, ref)) / scale
        opt.step()
        sync()
        if i:
            fwd, bwd = fwd + t1 - t0, bwd + time.perf_counter() - t1
    step = (fwd + bwd) / repeats
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"impl": impl, "setting": setting, "s_per_step": round(step, 4),
            "ms_per_task": round(1000 * step / tasks, 2),
            "forward_s": round(fwd / repeats, 4), "backward_and_adam_s": round(bwd / repeats, 4),
            "peak_mib": round(peak / 2**20, 1), "peak_kind": "cuda_allocated" if device.type == "cuda" else "rss",
            "grad_rel_diff": diff}


def _l2l_importable() -> str | None:
    try:
        import_learn2learn()
    except ImportError as e:
        return f"{type(e).__name__}: {str(e)[:100]}"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--impl", nargs="+", default=list(IMPLS), choices=IMPLS)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--repeats", type=int, default=2, help="timed steps per setting (after one warm-up)")
    ap.add_argument("--tasks", type=int, default=TASKS)
    ap.add_argument("--out", default="runs/benchmarks/maml_speed.json")
    ap.add_argument("--note", default="", help="a line kept in the JSON (e.g. how loaded the machine was)")
    ap.add_argument("--child", nargs=3, metavar=("IMPL", "SETTING", "REF"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.child:
        impl, setting, ref = args.child
        print(json.dumps(run_one(impl, setting, device, args.repeats, args.tasks, Path(ref))))
        return 0
    l2l_error = _l2l_importable()
    rows = []
    tmp = Path(tempfile.mkdtemp())
    print(f"MAML meta-step: Conv-4, {SIZE} px, {WAYS}-way {SHOTS}-shot, {QUERIES} queries, {args.tasks} tasks; "
          f"device {device}, {torch.get_num_threads()} thread(s)")
    print(f"{'impl':<12} {'setting':<10} {'s/step':>8} {'ms/task':>8} {'fwd s':>7} {'bwd s':>7} {'peak MiB':>9} "
          f"{'grad diff':>9}")
    for setting in args.settings:
        for impl in args.impl:
            if impl == "learn2learn" and l2l_error:
                continue
            cmd = [sys.executable, __file__, "--child", impl, setting, str(tmp / f"{setting}.pt"),
                   "--device", args.device, "--repeats",
                   str(args.repeats), "--tasks", str(args.tasks)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                print(f"{impl} {setting} failed: {proc.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"{impl:<12} {setting:<10} {r['s_per_step']:8.3f} {r['ms_per_task']:8.1f} {r['forward_s']:7.3f} "
                  f"{r['backward_and_adam_s']:7.3f} {r['peak_mib']:9.1f} {r['grad_rel_diff'] or 0:9.1e}")
        if l2l_error and setting in RECORDED_L2L:
            print(f"{'learn2learn':<12} {setting:<10} {RECORDED_L2L[setting]:8.3f}   (recorded earlier on this "
                  "machine, one thread, not measured in this run)")
    if l2l_error:
        print(f"learn2learn not measured: it cannot be imported here ({l2l_error})")
    out = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
           "python": platform.python_version(), "machine": platform.machine(), "tasks": args.tasks,
           "shape": {"ways": WAYS, "shots": SHOTS, "queries": QUERIES, "image_size": SIZE, "inner_lr": INNER_LR},
           "repeats": args.repeats, "note": args.note, "rows": rows,
           "learn2learn_recorded_s_per_step": RECORDED_L2L, "learn2learn_import_error": l2l_error}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
