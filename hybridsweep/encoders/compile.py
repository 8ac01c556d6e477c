"""``torch.compile`` of a text encoder's backbone: ``model.compile: true | false | auto``.

The backbone is compiled in place with :meth:`torch.nn.Module.compile`, which keeps the module
and its parameters where they are (no ``_orig_mod.`` wrapper), so state-dict keys, checkpoints
and the optimiser's parameter list are those of the eager model; pooling and normalisation stay
eager (a few element-wise operations).

A compiled graph is specialised to the input shapes it saw; a new (batch, length) shape either
recompiles (``dynamic=False``) or, from the second shape on, is served by one graph with symbolic
sizes (``dynamic=None``, torch's default). ``TextEncoder.pad_to_multiple_of`` bounds the number of
distinct lengths to ``ceil(max_length / multiple)``.

``auto`` compiles where it pays for itself within a sweep point: on CUDA. On CPU the measured
compile time (tens of seconds to minutes per shape under Inductor, on 2 cores) exceeds what the
fused kernels save over a point's training and evaluation (BENCHMARKS.md, "torch.compile").
"""

from __future__ import annotations

from typing import Literal

import torch

from hybridsweep.model import TextEncoder

CompileSetting = bool | Literal["auto"]


def should_compile(setting: CompileSetting, device: torch.device | str) -> bool:
    """Whether ``model.compile=<setting>`` compiles on ``device`` (``auto``: on CUDA only)."""
    if setting == "auto":
        return torch.device(device).type == "cuda"
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"model.compile={setting!r} is not allowed: expected true, false or auto")


def compile_encoder(
    encoder: TextEncoder,
    setting: CompileSetting = "auto",
    device: torch.device | str = "cpu",
    dynamic: bool | None = None,
    backend: str = "inductor",
) -> TextEncoder:
    """Compile ``encoder.backbone`` in place when :func:`should_compile` says so; returns ``encoder``.

    ``device`` is where the encoder will train and encode (its parameters may still be on the
    CPU when the builder calls this); ``dynamic`` and ``backend`` are passed to
    :func:`torch.compile`. Compilation itself happens lazily, at the first forward pass.
    """
    if should_compile(setting, device):
        encoder.backbone.compile(dynamic=dynamic, backend=backend)
    return encoder


def compiled(encoder: TextEncoder) -> bool:
    """Whether the encoder's backbone has been compiled by :func:`compile_encoder`."""
    return getattr(encoder.backbone, "_compiled_call_impl", None) is not None
