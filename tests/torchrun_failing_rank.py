"""Entry point for a torchrun test: ``fewshot-sla ARGS`` where rank 1 fails at its first
validation (a RuntimeError, as a real bug or lost device would raise) while rank 0 waits in the
validation's collective. The job must end with rank 1's error, not hang until the timeout."""

import os
import sys

from fewshot_sla.cli import main
from fewshot_sla.meta.train import MetaTrainer

if os.environ.get("RANK") == "1":
    def _fail(self):
        raise RuntimeError("injected failure on rank 1")

    MetaTrainer.validate = _fail

sys.exit(main(sys.argv[1:]))
