"""``torch.compile`` of a text encoder's backbone: ``model.compile: true | false | auto``.

The backbone is compiled in place with :meth:`torch.nn.Module.compile`, which keeps the module
and its parameters where they are (no ``_orig_mod.`` wrapper), so state-dict keys, checkpoints
and the optimiser's parameter list are those of the eager model; pooling and normalisation stay
eager (a few element-wise operations).

A compiled graph is specialised to the input shapes it saw. With ``dynamic=None`` (torch's
default) the second distinct shape recompiles once with symbolic sizes, after which every length
and batch size is served: measured, 3 graphs for an evaluation pass and 2 for training whatever
the padding. With ``dynamic=False`` every distinct (batch, padded length) shape is a graph, and
past ``torch._dynamo.config.recompile_limit`` (8) the frame silently runs eagerly: unpadded
XQuAD-R batches hit that limit; ``TextEncoder.pad_to_multiple_of`` bounds the lengths to
``ceil(max_length / multiple)`` (it must divide ``max_length``: the tokenizer refuses otherwise)
at the price of the padded tokens.

``auto`` compiles on CUDA only. On this project's CPU (2 cores, torch 2.13 Inductor) compiling
lost everywhere it was measured (BENCHMARKS.md, "torch.compile"): compiled encoding and training
ran at 0.7-0.98x of eager in fp32 and bf16, after 0.5-6 minutes of compilation per point, because
the time goes to oneDNN matrix products and the attention kernel, which Inductor calls as eager
does; what it fuses (GELU, layer norm, casts, residual adds) is about an eighth of the time. On
CUDA, fusing those element-wise kernels is where compile usually pays, and a minute of compile
time is small against a GPU point's training; that side was not measurable here.
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


def compile_seconds() -> float:
    """Seconds this process has spent in ``torch.compile`` so far, by Dynamo's own account (every
    frame compiled, and backward graphs compiled lazily at their first backward pass); 0 where
    that account is missing (it is a private API of torch)."""
    try:
        from torch._dynamo.utils import calculate_time_spent
    except ImportError:
        return 0.0
    return float(calculate_time_spent().get("total_wall_time", 0.0))
