"""Meta-training entry point: ``python train_meta.py ...`` is ``fewshot-sla meta-train ...``."""

import sys

from fewshot_sla.cli import main

if __name__ == "__main__":
    sys.exit(main(["meta-train", *sys.argv[1:]]))
