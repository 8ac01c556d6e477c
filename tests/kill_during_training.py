"""Runs ``python -m hybridsweep.train ARGS`` and SIGKILLs its own process once training reaches
global step ``$KILL_AT_STEP``: a crash that leaves no chance to clean up (no status, no flush).
Under DDP every rank runs this script (Lightning starts the other ranks from ``sys.argv``), so
the whole process tree dies at that step."""

import os
import signal
import sys

from hybridsweep import train as entry
from hybridsweep.model import DualEncoderModule

KILL_AT_STEP = int(os.environ["KILL_AT_STEP"])


def _kill_at_step(self, outputs, batch, batch_idx) -> None:
    if self.trainer.global_step >= KILL_AT_STEP:
        os.kill(os.getpid(), signal.SIGKILL)


DualEncoderModule.on_train_batch_end = _kill_at_step
sys.argv = [os.path.abspath(__file__), *sys.argv[1:]]
entry.main()
