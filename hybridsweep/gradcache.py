"""Gradient caching: a contrastive batch larger than memory, with the uncached loss's gradients.

Gao et al. (2021), "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup".
For an encoder f_theta, inputs x_1..x_B and a loss L(e_1..e_B) over all embeddings e_i = f(x_i),

    dL/dtheta = sum_i (dL/de_i) . (de_i/dtheta)

so the batch can be encoded in chunks of ``mini_batch_size`` without keeping any activation graph
(pass 1), the loss differentiated w.r.t. the detached embeddings alone (the cache g_i = dL/de_i),
and then every chunk encoded again with a graph and back-propagated with g_i as its output
gradient (pass 2); only one chunk's activations are alive at a time. The second pass replays the
random state of the first (dropout masks), so it computes exactly the e_i the loss was taken at.

The second pass runs inside the backward of :class:`_ReplayChunks`, an autograd function whose
inputs are the encoder's parameters. The loss it returns therefore behaves like an ordinary loss:
Lightning's automatic optimisation, gradient scaling of mixed precision (the incoming gradient is
the scale), gradient clipping and DDP's gradient hooks (each parameter receives its gradient once)
all work unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.checkpoint import get_device_states, set_device_states

Inputs = dict[str, torch.Tensor]


def split_inputs(inputs: Inputs, chunk_size: int) -> list[Inputs]:
    """Row chunks of a dict of tokenised tensors (all of the same first dimension)."""
    total = next(iter(inputs.values())).shape[0]
    return [{k: v[start:start + chunk_size] for k, v in inputs.items()} for start in range(0, total, chunk_size)]


class RandomState:
    """The CPU and accelerator generator states at a point, to replay the same random draws later."""

    def __init__(self, tensors: list[torch.Tensor]):
        self.cpu = torch.get_rng_state()
        self.devices, self.device_states = get_device_states(*tensors)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        set_device_states(self.devices, self.device_states)


class _AutocastState:
    """Whether autocast was on when pass 1 ran: pass 2 runs in backward, outside that context."""

    def __init__(self, device_type: str):
        self.device_type = device_type
        self.enabled = torch.is_autocast_enabled(device_type)
        self.dtype = torch.get_autocast_dtype(device_type)

    def context(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)


class _ReplayChunks(torch.autograd.Function):
    """Returns ``loss`` unchanged; its backward re-encodes each chunk and returns dL/dtheta.

    ``replay`` is a list of (encode, random state, cached gradient) triples: ``encode()`` encodes
    one chunk with a graph, and the cached gradient is dL/de for that chunk's embeddings.
    """

    @staticmethod
    def forward(ctx, loss: torch.Tensor, replay: list, autocast: _AutocastState, *parameters: torch.Tensor):
        ctx.replay, ctx.autocast = replay, autocast
        ctx.parameters = parameters
        return loss.detach().clone()

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        totals: list[torch.Tensor | None] = [None] * len(ctx.parameters)
        for encode, state, cached in ctx.replay:
            state.restore()
            with torch.enable_grad(), ctx.autocast.context():
                embeddings = encode()
            grads = torch.autograd.grad(
                embeddings, ctx.parameters, grad_outputs=(cached * grad_loss).to(embeddings.dtype),
                allow_unused=True,
            )
            totals = [t if g is None else (g if t is None else t + g) for t, g in zip(totals, grads)]
        # A parameter no chunk reached gets a zero gradient, as it would from an ordinary backward
        # under DDP (which expects every parameter to report).
        totals = [torch.zeros_like(p) if t is None else t for t, p in zip(totals, ctx.parameters)]
        # Replaying the last chunk left the generators where pass 1 left them.
        return (None, None, None, *totals)


def cached_contrastive_loss(
    encoder: nn.Module,
    queries: Inputs,
    passages: Inputs,
    loss_of_embeddings: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    mini_batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The contrastive loss of a whole batch, encoded ``mini_batch_size`` rows at a time.

    ``loss_of_embeddings(q, p)`` maps the local query and passage embeddings to the loss (it may
    gather them across devices). Returns ``(loss, n_local_rows)``; ``loss.backward()`` puts
    dL/dtheta into the encoder's parameters while holding one chunk's activations at a time.
    """
    if mini_batch_size <= 0:
        raise ValueError(f"mini_batch_size must be > 0, got {mini_batch_size}")
    some_tensor = next(iter(queries.values()))
    autocast = _AutocastState(some_tensor.device.type)
    pending: list[tuple[Callable[[], torch.Tensor], RandomState]] = []
    embeddings: dict[str, list[torch.Tensor]] = {"query": [], "passage": []}
    # Pass 1: every chunk without a graph, recording the random state each one started from.
    with torch.no_grad():
        for role, inputs in (("query", queries), ("passage", passages)):
            for chunk in split_inputs(inputs, mini_batch_size):
                state = RandomState(list(chunk.values()))
                embeddings[role].append(encoder(**chunk))
                pending.append((lambda chunk=chunk: encoder(**chunk), state, role))
    leaves = {role: torch.cat(parts).detach().requires_grad_() for role, parts in embeddings.items()}
    with torch.enable_grad():
        loss = loss_of_embeddings(leaves["query"], leaves["passage"])
        grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
    offsets = {"query": 0, "passage": 0}
    replay = []
    for encode, state, role in pending:
        rows = min(mini_batch_size, grads[role].shape[0] - offsets[role])
        replay.append((encode, state, grads[role][offsets[role]:offsets[role] + rows]))
        offsets[role] += rows
    parameters = [p for p in encoder.parameters() if p.requires_grad]
    return _ReplayChunks.apply(loss.detach(), replay, autocast, *parameters), leaves["query"].shape[0]
