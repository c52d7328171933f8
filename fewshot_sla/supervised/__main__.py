"""``python -m fewshot_sla.supervised ...`` is ``fewshot-sla supervised ...``."""

import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["supervised", *sys.argv[1:]]))
