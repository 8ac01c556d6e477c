"""``python -m hybridsweep.train ARGS`` that SIGKILLs its own process the ``n``-th time it enters
one phase: ``HYBRIDSWEEP_FAULT=<phase>:<n>`` with phase ``train`` (a training step), ``eval``
(encoding a batch of evaluation texts), ``log`` (a metric write to MLflow) or ``checkpoint``
(serialising a checkpoint, before it is committed to its file). Used by fault_injection.py."""

import os
import signal
import sys

import lightning.fabric.plugins.io.torch_io as torch_io

from hybridsweep import train as entry
from hybridsweep.model import DualEncoderModule
from hybridsweep.tracking.tracker import RunTracker

PHASE, COUNT = os.environ["HYBRIDSWEEP_FAULT"].split(":")
seen = 0


def _enter(phase: str) -> None:
    global seen
    if phase == PHASE:
        seen += 1
        if seen >= int(COUNT):
            os.kill(os.getpid(), signal.SIGKILL)


def _wrap(owner, name: str, phase: str) -> None:
    original = getattr(owner, name)

    def wrapped(*args, **kwargs):
        _enter(phase)
        return original(*args, **kwargs)

    setattr(owner, name, wrapped)


_wrap(DualEncoderModule, "training_step", "train")
_wrap(DualEncoderModule, "predict_step", "eval")
_wrap(RunTracker, "log_metrics", "log")
_wrap(torch_io, "_atomic_save", "checkpoint")
sys.argv = [os.path.abspath(__file__), *sys.argv[1:]]
entry.main()
