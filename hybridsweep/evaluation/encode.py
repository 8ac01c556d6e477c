"""Batched encoding of texts for evaluation, in batches of texts of similar token count."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from hybridsweep.model import Role, TextEncoder
from hybridsweep.precision import Precision, autocast_context

_COUNT_CHUNK = 2048


def token_counts(encoder: TextEncoder, texts: list[str], role: Role) -> np.ndarray:
    """Number of tokens of each text as ``encoder.tokenize`` feeds it to the model (the role's
    prefix and special tokens included, truncation applied), before any padding."""
    counts = [
        encoder.tokenize(texts[start : start + _COUNT_CHUNK], role)["attention_mask"].sum(1).numpy()
        for start in range(0, len(texts), _COUNT_CHUNK)
    ]
    return np.concatenate(counts) if counts else np.empty(0, dtype=np.int64)


def length_sorted_batches(counts: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Text indices in batches of ``batch_size``, in ascending order of token count.

    A batch is padded to its longest text, so its share of real tokens is
    ``sum(counts[batch]) / (len(batch) * max(counts[batch]))``; sorting by token count (not by
    characters, which differ in tokens per character across scripts) keeps that share near 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is not allowed: expected an integer > 0")
    order = np.argsort(counts, kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@torch.inference_mode()
def encode_texts(
    encoder: TextEncoder,
    texts: list[str],
    role: Role,
    batch_size: int = 64,
    desc: str | None = None,
    precision: Precision = "fp32",
) -> np.ndarray:
    """Embeddings of ``texts`` (float32, one row per text, in input order).

    Texts are encoded in batches of similar token count (:func:`length_sorted_batches`), each
    padded only to its own longest text; rows are put back in input order at the end.
    ``precision`` selects fp32 or bf16 autocast (see :mod:`hybridsweep.precision`);
    one autocast region spans all batches, so each weight is cast to bf16 once, not per batch.
    """
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    batches = length_sorted_batches(token_counts(encoder, texts, role), batch_size)
    chunks = []
    with autocast_context(precision, device):
        for indices in tqdm(batches, desc=desc or f"encode {role} texts", leave=False):
            inputs = {k: v.to(device) for k, v in encoder.tokenize([texts[i] for i in indices], role).items()}
            chunks.append(encoder(**inputs).float().cpu().numpy())
    encoder.train(was_training)
    if not chunks:
        return np.empty((0, 0), dtype=np.float32)
    embeddings = np.empty((len(texts), chunks[0].shape[1]), dtype=np.float32)
    embeddings[np.concatenate(batches)] = np.concatenate(chunks)
    return embeddings
