"""Exact inner-product nearest neighbours over L2-normalised embeddings.

The engine is faiss on a GPU when faiss was installed with GPU support (the ``gpu`` extra) and a
GPU is visible, faiss on the CPU otherwise (the ``cpu`` extra, the default), and an exact torch
search where faiss is missing. All three are exact (flat inner-product indexes): they agree up to
the order of tied scores, and the torch search serves as the oracle in tests.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

Engine = Literal["faiss-gpu", "faiss-cpu", "torch"]
_TORCH_CHUNK = 1024


def available_engine() -> Engine:
    """The fastest exact engine this installation offers."""
    try:
        import faiss
    except ImportError:
        return "torch"
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        return "faiss-gpu"
    return "faiss-cpu"


def nearest(queries: np.ndarray, pool: np.ndarray, k: int, engine: Engine | None = None) -> np.ndarray:
    """Positions in ``pool`` of each query's ``k`` highest inner products, best first: (n, k)."""
    engine = engine or available_engine()
    k = min(k, len(pool))
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    pool = np.ascontiguousarray(pool, dtype=np.float32)
    if engine == "torch":
        pool_tensor = torch.from_numpy(pool)
        return np.concatenate([
            torch.topk(torch.from_numpy(queries[start:start + _TORCH_CHUNK]) @ pool_tensor.T, k, dim=1).indices.numpy()
            for start in range(0, len(queries), _TORCH_CHUNK)
        ]) if len(queries) else np.empty((0, k), dtype=np.int64)
    import faiss

    index = faiss.IndexFlatIP(pool.shape[1])
    if engine == "faiss-gpu":
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(pool)
    return index.search(queries, k)[1]
