"""The ``fewshot-sla`` command with test hooks, run as a subprocess by test_interrupt.py and
test_run_lock.py (the hooks wrap methods in this process only; signals are real ``os.kill``s)::

    python tests/run_child.py [--signal-at K:SIG] [--again SIG] [--pause-at K] [--pause-after-save] -- ARGS

--signal-at K:SIG    send this process SIG (SIGINT, SIGTERM) right after optimiser step K
--again SIG          send SIG once more while the next checkpoint is being written
--pause-at K         after optimiser step K print "paused" and wait for a line on stdin
--pause-after-save   after the first checkpoint is written print "paused" and wait for a line on stdin
"""

import argparse
import os
import signal
import sys

from fewshot_sla.cli import main
from fewshot_sla.engine.trainer import Trainer
from fewshot_sla.rundir import RunDir


def _pause() -> None:
    print("paused", flush=True)
    sys.stdin.readline()


def install(opts: argparse.Namespace) -> None:
    step_of_signal, sig = None, None
    if opts.signal_at:
        k, name = opts.signal_at.split(":")
        step_of_signal, sig = int(k), getattr(signal, name)
    train_step, save = Trainer.train_step, RunDir.save
    armed = {"again": False, "saved": False}

    def hooked_step(self):
        sums = train_step(self)
        if self.step == step_of_signal:
            os.kill(os.getpid(), sig)
            armed["again"] = opts.again is not None
        if self.step == opts.pause_at:
            _pause()
        return sums

    def hooked_save(self, state, best=False):
        if armed["again"]:
            armed["again"] = False
            os.kill(os.getpid(), getattr(signal, opts.again))
        save(self, state, best)
        if opts.pause_after_save and not armed["saved"]:
            armed["saved"] = True
            _pause()

    Trainer.train_step, RunDir.save = hooked_step, hooked_save


if __name__ == "__main__":
    cut = sys.argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("--signal-at")
    parser.add_argument("--again")
    parser.add_argument("--pause-at", type=int)
    parser.add_argument("--pause-after-save", action="store_true")
    install(parser.parse_args(sys.argv[1:cut]))
    sys.exit(main(sys.argv[cut + 1:]))
