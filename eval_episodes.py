"""Episode evaluation entry point: ``python eval_episodes.py ...`` is ``fewshot-sla eval ...``."""

import sys

from fewshot_sla.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
