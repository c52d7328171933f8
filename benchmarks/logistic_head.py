"""Speed of the ``logistic`` head against scikit-learn's ``LogisticRegression`` (RFS's loop).

Per case (N-way K-shot, feature dimension D, 15 queries per class, L2-normalised features,
C = 1): seconds for one episode and for a batch of ``--episodes`` episodes with the torch head
(float64, one call), and scikit-learn fitted episode by episode as RFS does
(``LogisticRegression(C=1, solver='lbfgs', max_iter=1000)``, multinomial) on ``--sklearn-episodes``
of them, extrapolated per episode. Also the largest |p_head - p_sklearn| over those episodes.
Medians of ``--reps`` repetitions after a warm-up.

    python benchmarks/logistic_head.py [--episodes 1000] [--sklearn-episodes 50] [--reps 3] \
        [--threads 1] [--out runs/logistic_head.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from fewshot_sla.heads import LogisticHead

# (name, n_way, k_shot, D): RFS's settings, Omniglot's Conv-4 (D = 64), and the SLA
# expansion of a 5-way episode with 4 rotations (20-way, 4 rows per original image).
CASES = [
    ("5w1s D=640", 5, 1, 640),
    ("5w5s D=640", 5, 5, 640),
    ("20w1s D=64", 20, 1, 64),
    ("SLA 5w1s x4 (20-way) D=64", 20, 1, 64),
    ("SLA 5w5s x4 (20-way) D=64", 20, 5, 64),
]


def make(n_episodes: int, n_way: int, k_shot: int, dim: int, n_query: int = 15, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_episodes, n_way, 1, dim, generator=g, dtype=torch.float64)
    sup = centres + 1.5 * torch.randn(n_episodes, n_way, k_shot, dim, generator=g, dtype=torch.float64)
    qry = centres + 1.5 * torch.randn(n_episodes, n_way, n_query, dim, generator=g, dtype=torch.float64)
    labels = torch.arange(n_way).repeat_interleave(k_shot).expand(n_episodes, -1).contiguous()
    return qry.reshape(n_episodes, -1, dim), sup.reshape(n_episodes, -1, dim), labels


def median_time(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sklearn_probs(query, support, labels):
    from sklearn.linear_model import LogisticRegression

    out = []
    for q, s, y in zip(query.numpy(), support.numpy(), labels.numpy()):
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        s = s / np.linalg.norm(s, axis=1, keepdims=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = LogisticRegression(C=1.0, random_state=0, solver="lbfgs", max_iter=1000).fit(s, y)
        out.append(clf.predict_proba(q))
    return np.stack(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--sklearn-episodes", type=int, default=50)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/logistic_head.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    head = LogisticHead()
    rows = []
    for name, n_way, k_shot, dim in CASES:
        query, support, labels = make(args.episodes, n_way, k_shot, dim)
        one = median_time(lambda q=query, s=support, y=labels, n=n_way: head(q[:1], s[:1], y[:1], n), args.reps)
        batch = median_time(lambda q=query, s=support, y=labels, n=n_way: head(q, s, y, n), args.reps)
        m = args.sklearn_episodes
        sklearn_probs(query[:1], support[:1], labels[:1])  # warm-up (imports, first-call costs)
        t0 = time.perf_counter()
        ref = sklearn_probs(query[:m], support[:m], labels[:m])
        sk = (time.perf_counter() - t0) / m
        probs = torch.softmax(head(query[:m], support[:m], labels[:m], n_way), -1).numpy()
        rows.append({
            "case": name, "n_way": n_way, "k_shot": k_shot, "dim": dim, "episodes": args.episodes,
            "head_one_episode_s": one, "head_batch_s": batch, "head_per_episode_s": batch / args.episodes,
            "sklearn_per_episode_s": sk, "speedup_batch_vs_sklearn": sk / (batch / args.episodes),
            "max_abs_prob_diff": float(np.abs(probs - ref).max()),
        })
    print(f"{'case':28s} {'head 1 ep':>10s} {'head batch':>11s} {'per ep':>9s} {'sklearn/ep':>11s} "
          f"{'speedup':>8s} {'max|dp|':>8s}")
    for r in rows:
        print(f"{r['case']:28s} {r['head_one_episode_s'] * 1e3:8.2f}ms {r['head_batch_s']:10.2f}s "
              f"{r['head_per_episode_s'] * 1e3:7.2f}ms {r['sklearn_per_episode_s'] * 1e3:9.2f}ms "
              f"{r['speedup_batch_vs_sklearn']:7.1f}x {r['max_abs_prob_diff']:8.1e}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": args.threads, "machine": platform.machine(),
            "processor": platform.processor(), "reps": args.reps}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
