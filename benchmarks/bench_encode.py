"""Encoding throughput in fp32 and bf16 autocast, as a fraction of the machine's matmul peak.

Per round, interleaved: the peak of a large square ``torch.matmul`` in fp32 and in bf16, then the
evaluation corpus's questions and candidates encoded by
:func:`~hybridsweep.evaluation.evaluator.embed` (a run's path: ``trainer.predict``) in fp32 and in
bf16 (batches sorted by token count), and, as the baseline of that ordering, in bf16 with batches
sorted by characters (the order used before). ``--batch-sizes`` adds bf16 runs at other batch
sizes. Achieved FLOP/s counts the matrix products of the padded batches actually computed:

    FLOPs per token = 2 * L * (4 h^2 + 2 h i)   (Q, K, V, output projections and the MLP)
                    + 4 * L * s * h              (Q K^T and attention-weighted V over s positions)

for L layers, hidden size h, MLP size i and padded sequence length s of the token's batch.
Texts/s compares orderings (padding is work that FLOP/s counts but texts/s does not reward).
Retrieval metrics of both precisions are compared on the same embeddings' evaluation; with
``--question-ids N`` only the first N question ids of the evaluation corpus are encoded.

    OMP_NUM_THREADS=1 python benchmarks/bench_encode.py --model tiny_wide
    OMP_NUM_THREADS=1 HYBRIDSWEEP_DATA=../shared/data python benchmarks/bench_encode.py --model e5_small eval=xquad_r --question-ids 150
"""

from __future__ import annotations

import statistics
import time

import torch
from common import (
    batch_flops,
    build_corpora_and_encoder,
    encode_char_sorted,
    interleave,
    load_config,
    machine,
    matmul_peak,
    parser,
    write_results,
)

from hybridsweep.evaluation.evaluator import embed, encoding_trainer
from hybridsweep.evaluation.retrieval import evaluate_embeddings
from hybridsweep.precision import has_fast_bf16


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--question-ids", type=int, default=0, help="only the first N question ids (0: all)")
    args.add_argument("--batch-sizes", default="", help="further bf16 batch sizes to time (comma-separated)")
    args = args.parse_args()
    cfg = load_config(args.model, args.overrides)
    _, eval_corpus, encoder = build_corpora_and_encoder(cfg)
    if args.question_ids:
        eval_corpus = eval_corpus.select_ids(set(eval_corpus.question_ids[: args.question_ids]))
    encoder.eval()
    questions = [q.text for q in eval_corpus.questions]
    candidates = [c.text for c in eval_corpus.candidates]
    n_texts = len(questions) + len(candidates)
    print(f"machine: {machine()}; native bf16: {has_fast_bf16(torch.device('cpu'))}")
    print(f"model: {encoder.name} ({args.model}); {len(questions)} questions + {len(candidates)} candidates, "
          f"batch {cfg.eval.batch_size}")

    # Count what the model computes: wrap forward to see every padded batch it runs.
    counted = {"flops": 0.0, "padded": 0, "real": 0}
    forward = encoder.forward

    def counting_forward(input_ids, attention_mask, **extra):
        counted["flops"] += batch_flops(encoder.backbone.config, input_ids)
        counted["padded"] += input_ids.numel()
        counted["real"] += int(attention_mask.sum())
        return forward(input_ids, attention_mask, **extra)

    encoder.forward = counting_forward
    embeddings, useful = {}, {}

    trainer = encoding_trainer("cpu")  # one, as a run evaluates with its one Trainer

    def pipeline(*args, **kwargs):
        return embed(*args, trainer=trainer, **kwargs)

    def encode(name: str, precision: str, batch_size: int, function=pipeline):
        def run() -> float:
            counted.update(flops=0.0, padded=0, real=0)
            start = time.perf_counter()
            q = function(encoder, questions, "query", batch_size, precision=precision)
            c = function(encoder, candidates, "passage", batch_size, precision=precision)
            seconds = time.perf_counter() - start
            embeddings[name], useful[name] = (q, c), counted["real"] / counted["padded"]
            texts_per_s[name].append(n_texts / seconds)
            return counted["flops"] / seconds
        return run

    batch = cfg.eval.batch_size
    candidates_to_run = {
        "matmul fp32": lambda: matmul_peak(torch.float32),
        "matmul bf16": lambda: matmul_peak(torch.bfloat16),
        "encode fp32": encode("encode fp32", "fp32", batch),
        "encode bf16": encode("encode bf16", "bf16", batch),
        "encode bf16 char-sorted": encode("encode bf16 char-sorted", "bf16", batch, encode_char_sorted),
    }
    for size in filter(None, args.batch_sizes.split(",")):
        candidates_to_run[f"encode bf16 batch {size}"] = encode(f"encode bf16 batch {size}", "bf16", int(size))
    texts_per_s: dict[str, list[float]] = {name: [] for name in candidates_to_run if name.startswith("encode")}
    rates = interleave(candidates_to_run, args.rounds)
    for name, share in useful.items():
        print(f"{name}: {share:.1%} of the padded tokens are real")
    med = {name: statistics.median(values) / 1e9 for name, values in rates.items()}
    for name, value in med.items():
        print(f"{name}: median {value:.1f} GFLOP/s")

    def per_round(num: str, den: str, table=rates) -> float:
        return statistics.median(a / b for a, b in zip(table[num], table[den]))

    figures = {
        "model": args.model, "encoder": encoder.name, "texts": n_texts, "batch_size": batch, "rounds": args.rounds,
        "gflops_median": med,
        "texts_per_s_median": {name: statistics.median(v) for name, v in texts_per_s.items()},
        "real_token_share": useful,
        "matmul_peak_bf16_over_fp32": per_round("matmul bf16", "matmul fp32"),
        "encode_bf16_over_fp32": per_round("encode bf16", "encode fp32"),
        "encode_fp32_share_of_fp32_peak": per_round("encode fp32", "matmul fp32"),
        "encode_bf16_share_of_bf16_peak": per_round("encode bf16", "matmul bf16"),
        "token_sorted_over_char_sorted_texts_per_s": per_round("encode bf16", "encode bf16 char-sorted", texts_per_s),
    }
    for size in filter(None, args.batch_sizes.split(",")):
        figures[f"batch_{size}_over_batch_{batch}_texts_per_s"] = per_round(f"encode bf16 batch {size}", "encode bf16", texts_per_s)
    for key, value in figures.items():
        if isinstance(value, float):
            print(f"{key}: {value:.3f}")
    metrics = {p: evaluate_embeddings(eval_corpus, *embeddings[f"encode {p}"], top_k=cfg.eval.top_k).metrics
               for p in ("fp32", "bf16")}
    for key in ("map_full/monolingual", "map_full/crosslingual", "map_full/multilingual"):
        figures[f"{key} fp32"], figures[f"{key} bf16"] = metrics["fp32"][key], metrics["bf16"][key]
        print(f"{key}: fp32 {metrics['fp32'][key]:.4f} bf16 {metrics['bf16'][key]:.4f} "
              f"|diff| {abs(metrics['fp32'][key] - metrics['bf16'][key]):.4f}")
    write_results(f"encode_{args.model}", figures)


if __name__ == "__main__":
    main()
