"""Encoding throughput in fp32 and bf16 autocast, as a fraction of the machine's matmul peak.

Per round, interleaved: the peak of a large square ``torch.matmul`` in fp32 and in bf16, then the
evaluation corpus's questions and candidates encoded by :func:`encode_texts` in fp32 and in bf16.
Achieved FLOP/s counts the matrix products of the padded batches actually computed:

    FLOPs per token = 2 * L * (4 h^2 + 2 h i)   (Q, K, V, output projections and the MLP)
                    + 4 * L * s * h              (Q K^T and attention-weighted V over s positions)

for L layers, hidden size h, MLP size i and padded sequence length s of the token's batch.
Retrieval metrics of both precisions are compared on the same embeddings' evaluation.

    OMP_NUM_THREADS=1 python benchmarks/bench_encode.py --model tiny_wide
"""

from __future__ import annotations

import statistics
import time

import torch
from common import build_corpora_and_encoder, interleave, load_config, machine, parser

from hybridsweep.evaluation.encode import encode_texts
from hybridsweep.evaluation.precision import has_fast_bf16
from hybridsweep.evaluation.retrieval import evaluate_embeddings


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of ``size x size`` matrix products in ``dtype`` over ``repeats`` timed calls."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up: lets oneDNN pick and cache its kernel
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def batch_flops(config, input_ids: torch.Tensor) -> float:
    """Matrix-product FLOPs of one padded batch through a BERT-style encoder (formula above)."""
    layers, hidden, mlp = config.num_hidden_layers, config.hidden_size, config.intermediate_size
    batch, length = input_ids.shape
    per_token = 2 * layers * (4 * hidden**2 + 2 * hidden * mlp) + 4 * layers * length * hidden
    return per_token * batch * length


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    cfg = load_config(args.model, args.overrides)
    _, eval_corpus, encoder = build_corpora_and_encoder(cfg)
    encoder.eval()
    questions = [q.text for q in eval_corpus.questions]
    candidates = [c.text for c in eval_corpus.candidates]
    print(f"machine: {machine()}; native bf16: {has_fast_bf16(torch.device('cpu'))}")
    print(f"model: {encoder.name} ({args.model}); {len(questions)} questions + {len(candidates)} candidates, "
          f"batch {cfg.eval.batch_size}")

    # Count what the model computes: wrap tokenize to see every padded batch.
    counted = {"flops": 0.0, "padded": 0, "real": 0}
    tokenize = encoder.tokenize

    def counting_tokenize(texts, role):
        inputs = tokenize(texts, role)
        counted["flops"] += batch_flops(encoder.backbone.config, inputs["input_ids"])
        counted["padded"] += inputs["input_ids"].numel()
        counted["real"] += int(inputs["attention_mask"].sum())
        return inputs

    encoder.tokenize = counting_tokenize
    embeddings = {}

    def encode(precision: str):
        def run() -> float:
            counted.update(flops=0.0, padded=0, real=0)
            start = time.perf_counter()
            q = encode_texts(encoder, questions, "query", cfg.eval.batch_size, precision=precision)
            c = encode_texts(encoder, candidates, "passage", cfg.eval.batch_size, precision=precision)
            embeddings[precision] = (q, c)
            return counted["flops"] / (time.perf_counter() - start)
        return run

    rates = interleave({
        "matmul fp32": lambda: matmul_peak(torch.float32),
        "matmul bf16": lambda: matmul_peak(torch.bfloat16),
        "encode fp32": encode("fp32"),
        "encode bf16": encode("bf16"),
    }, args.rounds)
    print(f"tokens per pass: {counted['real']} real, {counted['padded']} padded "
          f"({counted['real'] / counted['padded']:.1%} useful)")
    med = {name: statistics.median(values) / 1e9 for name, values in rates.items()}
    for name, value in med.items():
        print(f"{name}: median {value:.1f} GFLOP/s")

    def per_round(num: str, den: str) -> float:
        return statistics.median(a / b for a, b in zip(rates[num], rates[den]))

    print(f"matmul peak bf16 / fp32: {per_round('matmul bf16', 'matmul fp32'):.2f}x")
    print(f"encode bf16 / fp32 (speed-up): {per_round('encode bf16', 'encode fp32'):.2f}x")
    print(f"encode fp32 / matmul fp32 peak: {per_round('encode fp32', 'matmul fp32'):.1%}")
    print(f"encode bf16 / matmul bf16 peak: {per_round('encode bf16', 'matmul bf16'):.1%}")
    metrics = {p: evaluate_embeddings(eval_corpus, *embeddings[p], top_k=cfg.eval.top_k).metrics for p in embeddings}
    for key in ("map_full/monolingual", "map_full/crosslingual", "map_full/multilingual"):
        print(f"{key}: fp32 {metrics['fp32'][key]:.4f} bf16 {metrics['bf16'][key]:.4f} "
              f"|diff| {abs(metrics['fp32'][key] - metrics['bf16'][key]):.4f}")


if __name__ == "__main__":
    main()
