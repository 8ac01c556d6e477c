"""Batched encoding of texts for evaluation."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from hybridsweep.evaluation.precision import Precision, autocast_context
from hybridsweep.model import Role, TextEncoder


@torch.inference_mode()
def encode_texts(
    encoder: TextEncoder,
    texts: list[str],
    role: Role,
    batch_size: int = 256,
    desc: str | None = None,
    precision: Precision = "fp32",
) -> np.ndarray:
    """Embeddings of ``texts`` (float32, one row per text, in input order).

    Texts are encoded in order of length so that each batch pads only to its own longest text
    (dynamic padding); rows are put back in input order at the end. ``precision`` selects fp32 or
    bf16 autocast (see :mod:`hybridsweep.evaluation.precision`).
    """
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    order = np.argsort([len(t) for t in texts], kind="stable")
    chunks = []
    for start in tqdm(range(0, len(texts), batch_size), desc=desc or f"encode {role} texts", leave=False):
        batch = [texts[i] for i in order[start : start + batch_size]]
        inputs = {k: v.to(device) for k, v in encoder.tokenize(batch, role).items()}
        with autocast_context(precision, device):
            embeddings = encoder(**inputs)
        chunks.append(embeddings.float().cpu().numpy())
    encoder.train(was_training)
    if not chunks:
        return np.empty((0, 0), dtype=np.float32)
    embeddings = np.empty((len(texts), chunks[0].shape[1]), dtype=np.float32)
    embeddings[order] = np.concatenate(chunks)
    return embeddings
