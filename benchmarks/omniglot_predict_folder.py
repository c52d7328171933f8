"""Write a support/query folder of raw Omniglot PNGs from held-out test alphabets, for
``fewshot-sla predict`` on real data.

Picks ``--characters`` characters (seeded) from the alphabets that ``--dataset-options
val_alphabets=5,test_alphabets=5`` holds out for testing (the main job's), and copies each
character's first ``--shots`` drawings to ``OUT/support/<character>/`` and the others (15 of 20) to
``OUT/query/<character>/``: the official PNGs as they are (black strokes on white, 105 px), so
``predict`` converts them exactly as a user's own files.

    python benchmarks/omniglot_predict_folder.py --data-root ../shared/data/omniglot --out runs/omniglot_predict
    fewshot-sla predict --checkpoint runs/omniglot_sla --support runs/omniglot_predict/support \\
        --query runs/omniglot_predict/query --quiet
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from fewshot_sla.data.omniglot import find_omniglot, scan_omniglot, split_alphabets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", default="runs/omniglot_predict")
    p.add_argument("--characters", type=int, default=5)
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--val-alphabets", type=int, default=5)
    p.add_argument("--test-alphabets", type=int, default=5)
    p.add_argument("--split-seed", type=int, default=0, help="the run's dataset option split_seed")
    p.add_argument("--seed", type=int, default=0, help="which characters")
    a = p.parse_args()
    tree = find_omniglot(a.data_root, "background")
    try:
        index = scan_omniglot(tree, "background")
        test = set(split_alphabets(index.alphabets, a.val_alphabets, a.test_alphabets, a.split_seed)["test"])
        pool = [i for i, (alpha, _) in enumerate(index.classes) if alpha in test]
        chosen = sorted(random.Random(a.seed).sample(pool, a.characters))
        out = Path(a.out)
        for i in chosen:
            alpha, char = index.classes[i]
            name = f"{alpha}_{char}"
            for k, f in enumerate(index.files[i]):
                d = out / ("support" if k < a.shots else "query") / name
                d.mkdir(parents=True, exist_ok=True)
                (d / Path(f).name).write_bytes(tree.read(f))
            print(f"{name}: {min(a.shots, len(index.files[i]))} support, {max(0, len(index.files[i]) - a.shots)} query")
    finally:
        tree.close()
    print(f"wrote {out}/support and {out}/query (test alphabets: {', '.join(sorted(test))})")


if __name__ == "__main__":
    main()
