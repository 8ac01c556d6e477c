"""Which floating-point precision evaluation encodes in (``fp32``, ``bf16`` or ``auto``) and
which precision the Trainer trains in (``trainer.precision``, ``auto`` included).

``bf16`` runs the forward pass under ``torch.autocast`` with bfloat16, so matrix products take
bf16 inputs and accumulate in fp32 while layer norms and softmax stay in fp32; embeddings are
returned as fp32. ``auto`` picks bf16 only where the hardware multiplies bf16 natively (CUDA
devices that report bf16 support; CPUs with AVX512-BF16 or AMX), because elsewhere bf16 is
emulated and slower than fp32.

For training, ``trainer.precision: auto`` resolves on the same test to Lightning's
``bf16-mixed`` (autocast to bf16 in forward and backward, fp32 master weights and optimiser
state, no loss scaling) or ``32-true``.
"""

from __future__ import annotations

from typing import Literal

import torch

from hybridsweep.machine import cpu_bf16_units

Precision = Literal["fp32", "bf16", "auto"]
PRECISIONS = ("fp32", "bf16", "auto")


def has_fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(cpu_bf16_units())
    return False


def resolve_precision(precision: Precision, device: torch.device, fast_bf16: bool | None = None) -> Literal["fp32", "bf16"]:
    """``auto`` made concrete for ``device`` (``fast_bf16``: as for hardware that does, or does
    not, multiply bf16 natively, instead of probing ``device``); ``fp32``/``bf16`` are returned unchanged."""
    if precision not in PRECISIONS:
        raise ValueError(f"eval.precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if (has_fast_bf16(device) if fast_bf16 is None else fast_bf16) else "fp32"
    return precision


def autocast_context(precision: Precision, device: torch.device) -> torch.autocast:
    """``torch.autocast`` to bf16 when the resolved precision is bf16, and autocast switched off
    otherwise: explicit either way, because inside a ``bf16-mixed`` Trainer an fp32 encoding must
    leave the Trainer's autocast region."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolve_precision(precision, device) == "bf16")


def accelerator_device(accelerator: str | torch.device) -> torch.device:
    """The device type a Lightning ``accelerator`` name trains on (``auto``: what Lightning picks)."""
    if isinstance(accelerator, torch.device):
        return accelerator
    name = str(accelerator).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if name in ("gpu", "cuda"):
        return torch.device("cuda")
    if name in ("cpu", "mps"):
        return torch.device(name)
    raise ValueError(f"trainer.accelerator={accelerator!r}: expected cpu, gpu, cuda, mps or auto")


def resolve_trainer_precision(precision: str | int, accelerator: str | torch.device,
                              fast_bf16: bool | None = None) -> str | int:
    """``trainer.precision: auto`` made concrete: ``bf16-mixed`` where the accelerator multiplies
    bf16 natively (:func:`has_fast_bf16`, or ``fast_bf16`` where given), else ``32-true``; any
    other value is returned unchanged for Lightning to validate."""
    if precision != "auto":
        return precision
    fast = has_fast_bf16(accelerator_device(accelerator)) if fast_bf16 is None else fast_bf16
    return "bf16-mixed" if fast else "32-true"
