"""SVM-CS head: qpth's dense interior point vs the structured solver, side by side.

Both run MetaOptNet's SVM head (``get_head("svm", solver=...)``) on random float64 features
(D = 64) of SLA-expanded episodes (rotation, M = 4: N-way K-shot -> C = 4N classes, S = 4NK
support rows, 15 queries per class at test, 6 in training):

    5-way 1-shot SLA     T = 1, C = 20, S = 20     3 iterations (MetaOptNet's test setting)
    20-way 1-shot SLA    T = 1, C = 80, S = 80     3 iterations
    training step        T = 8, C = 20, S = 100    15 iterations (5-way 5-shot SLA, CIFAR-FS step)

Every measurement runs in a fresh process with one thread (``torch.set_num_threads(1)``):
``fwd`` is the time until the logits exist, ``fwd+bwd`` until the gradients w.r.t. query and
support exist (a weighted sum of the logits is backpropagated); medians over ``--reps`` runs
after one warm-up run (qpth on the 20-way case and the training step: one run, no warm-up;
``--skip-qpth-large`` skips qpth on the 20-way case). Wall time and the process's CPU time are
both recorded: on a shared machine the CPU time of the one-thread process is the steadier
figure. Peak memory is the process's peak resident set size (``ru_maxrss``) above its resident
size just before the first call, on CUDA ``torch.cuda.max_memory_allocated`` above the memory
allocated before the call. Finally the largest episodes the structured solver handles within
1 s (wall time, one thread, fwd at 3 iterations and fwd+bwd at 15) are searched along 5-way
K-shot SLA (C = 20, S = 20K) and N-way 1-shot SLA (C = S = 4N).

    python benchmarks/svm_solver.py [--reps 3] [--skip-qpth-large] [--device cpu|cuda] \\
        [--out runs/benchmarks/svm_solver.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

D = 64
M = 4
# name, n_way, k_shot, queries per class, tasks, iterations
CASES = [
    ("5-way 1-shot SLA", 5, 1, 15, 1, 3),
    ("20-way 1-shot SLA", 20, 1, 15, 1, 3),
    ("train step 8x 5-way 5-shot SLA", 5, 5, 6, 8, 15),
]


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (resource.getpagesize() // 1024)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _episode(n_way: int, k_shot: int, q_per_class: int, tasks: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    n, s, q = n_way * M, n_way * M * k_shot, n_way * M * q_per_class
    base = torch.arange(n_way).repeat(k_shot)
    labels = (base[:, None] * M + torch.arange(M)).reshape(-1).repeat(tasks, 1)  # y*M + j at row b*M + j
    support = torch.randn(tasks, s, D, generator=g, dtype=torch.float64)
    query = torch.randn(tasks, q, D, generator=g, dtype=torch.float64)
    weights = torch.randn(tasks, q, n, generator=g, dtype=torch.float64)
    return [t.to(device) for t in (query, support, labels, weights)] + [n]


def _measure(n_way, k_shot, q_per_class, tasks, iters, solver, reps, warmup, device_name):
    """Time and peak memory of fwd / fwd+bwd in this process. Returns a dict."""
    from fewshot_sla.heads import get_head

    torch.set_num_threads(1)
    device = torch.device(device_name)
    query, support, labels, weights, n = _episode(n_way, k_shot, q_per_class, tasks, device)
    head = get_head("svm", max_iter=iters, solver=solver)

    def run():
        q, s = query.clone().requires_grad_(True), support.clone().requires_grad_(True)
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        logits = head(q, s, labels, n)
        _sync(device)
        t1, c1 = time.perf_counter(), time.process_time()
        torch.autograd.grad((logits * weights).sum(), (q, s))
        _sync(device)
        return t1 - t0, time.perf_counter() - t0, c1 - c0, time.process_time() - c0

    rss0 = _rss_kib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        mem0 = torch.cuda.memory_allocated(device)
    for _ in range(warmup):
        run()
    times = [run() for _ in range(reps)]
    if device.type == "cuda":
        peak_mib = (torch.cuda.max_memory_allocated(device) - mem0) / 2**20
    else:
        peak_mib = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    return {
        "fwd_s": statistics.median(t[0] for t in times),
        "fwd_bwd_s": statistics.median(t[1] for t in times),
        "fwd_cpu_s": statistics.median(t[2] for t in times),
        "fwd_bwd_cpu_s": statistics.median(t[3] for t in times),
        "peak_mib": peak_mib,
        "runs": reps,
    }


def _child(conn, *args):
    try:
        conn.send(_measure(*args))
    except Exception as err:  # reported in the parent
        conn.send({"error": repr(err)})
    conn.close()


def measure(n_way, k_shot, q_per_class, tasks, iters, solver, reps, warmup, device) -> dict:
    """Run :func:`_measure` in a fresh process (clean peak-memory figure, one thread)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, n_way, k_shot, q_per_class, tasks, iters, solver, reps,
                                            warmup, device))
    proc.start()
    out = parent.recv()
    proc.join()
    if "error" in out:
        raise RuntimeError(f"{solver} on {n_way}-way {k_shot}-shot x{tasks}: {out['error']}")
    return out


def largest_within(budget_s: float, grow, iters: int, timed: str, reps: int, device: str) -> dict:
    """Largest episode (along ``grow``: k -> (n_way, k_shot)) whose ``timed`` time is <= budget_s."""
    best = None
    for k in grow:
        n_way, k_shot = k
        r = measure(n_way, k_shot, 1, 1, iters, "structured", reps, 1, device)
        if r[timed] > budget_s:
            break
        best = {"n_way": n_way, "k_shot": k_shot, "C": n_way * M, "S": n_way * M * k_shot,
                "dual_variables": n_way * M * n_way * M * k_shot, "iterations": iters, timed: r[timed]}
    return best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="timed runs per measurement (3)")
    parser.add_argument("--skip-qpth-large", action="store_true", help="skip qpth on the 20-way case (~3-5 min)")
    parser.add_argument("--skip-qpth", action="store_true", help="skip qpth entirely")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/svm_solver.json"), help="JSON output")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")

    rows = []
    header = (f"{'episode':32} {'C':>3} {'S':>4} {'vars':>6} {'it':>3} {'solver':10} {'fwd s':>9} {'fwd+bwd s':>10} "
              f"{'fwd cpu s':>9} {'f+b cpu s':>10} {'peak MiB':>9}  speed-up fwd / fwd+bwd (cpu time)")
    load_before = os.getloadavg()
    print(header)
    print("-" * len(header))
    for name, n_way, k_shot, q_per_class, tasks, iters in CASES:
        res = {}
        c, s = n_way * M, n_way * M * k_shot
        large = c * s > 4000
        for solver in ("structured", "qpth"):
            if solver == "qpth" and (args.skip_qpth or (large and args.skip_qpth_large)):
                continue
            reps, warmup = (1, 0) if solver == "qpth" and (large or tasks > 1) else (args.reps, 1)
            res[solver] = measure(n_way, k_shot, q_per_class, tasks, iters, solver, reps, warmup, args.device)
        row = {"episode": name, "tasks": tasks, "C": c, "S": s, "dual_variables": c * s, "iterations": iters,
               "D": D, "queries": n_way * M * q_per_class, **{f"{k}": v for k, v in res.items()}}
        if "qpth" in res:
            for key in ("fwd_s", "fwd_bwd_s", "fwd_cpu_s", "fwd_bwd_cpu_s"):
                row[f"speedup_{key[:-2]}"] = res["qpth"][key] / res["structured"][key]
        rows.append(row)
        for solver, r in res.items():
            speed = (f"{row['speedup_fwd']:.0f}x / {row['speedup_fwd_bwd']:.0f}x "
                     f"(cpu {row['speedup_fwd_cpu']:.0f}x / {row['speedup_fwd_bwd_cpu']:.0f}x)"
                     if solver == "structured" and "qpth" in res else "")
            print(f"{name:32} {c:>3} {s:>4} {c * s:>6} {iters:>3} {solver:10} {r['fwd_s']:9.4f} "
                  f"{r['fwd_bwd_s']:10.4f} {r['fwd_cpu_s']:9.4f} {r['fwd_bwd_cpu_s']:10.4f} {r['peak_mib']:9.1f}  "
                  f"{speed}", flush=True)

    print("\nlargest episode the structured solver handles within 1 s (one thread, one task):")
    largest = {}
    searches = {
        "5-way K-shot SLA": [(5, k) for k in (5, 10, 12, 15, 18, 20, 22, 25, 30, 35, 40, 50, 60)],
        "N-way 1-shot SLA": [(n, 1) for n in (20, 25, 30, 35, 40, 45, 50, 55, 60, 70, 80, 100)],
    }
    for label, grow in searches.items():
        for iters, timed in ((3, "fwd_s"), (15, "fwd_bwd_s")):
            best = largest_within(1.0, grow, iters, timed, 1, args.device)
            largest[f"{label}, {timed[:-2]} at {iters} iterations"] = best
            desc = "none" if best is None else (
                f"{best['n_way']}-way {best['k_shot']}-shot SLA: C={best['C']}, S={best['S']}, "
                f"{best['dual_variables']} variables, {best[timed]:.2f} s")
            print(f"  {label:18} {timed[:-2]:8} {iters:>2} it: {desc}", flush=True)

    result = {
        "benchmark": "svm_solver",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": 1,
        "device": args.device,
        "cuda_device": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
        "dtype": "float64",
        "peak_memory": ("peak RSS above the pre-call RSS, fresh process (ru_maxrss)" if args.device == "cpu"
                        else "torch.cuda.max_memory_allocated above the pre-call allocation"),
        "reps": args.reps,
        "load_average_1_5_15_min": {"start": load_before, "end": os.getloadavg()},
        "rows": rows,
        "largest_within_1s": largest,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
