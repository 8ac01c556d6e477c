"""Where encoding time goes: a torch.profiler table of one evaluation pass, by operator.

Encodes the first ``--texts`` evaluation candidates (passage role) with :func:`encode_texts` at
``--precision`` under ``torch.profiler`` (CPU activities), after one unprofiled warm-up pass, and
prints the operators by self CPU time. Written: each operator's share of the profiled self CPU
time, the share of the matrix products (``addmm``, ``mm``, ``bmm``, ``linear``'s kernels) and of
attention (``scaled_dot_product_attention`` and its flash kernel), and the rest.

    OMP_NUM_THREADS=1 HYBRIDSWEEP_DATA=../shared/data python benchmarks/profile_encode.py --model e5_small eval=xquad_r
"""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from common import build_corpora_and_encoder, load_config, machine, parser, write_results
from hybridsweep.evaluation.encode import encode_texts

MATMUL_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "mkldnn::_linear_pointwise", "aten::baddbmm")
ATTENTION_MARK = "scaled_dot_product"


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--texts", type=int, default=1000)
    args.add_argument("--precision", default="bf16")
    args.add_argument("--top", type=int, default=15)
    args = args.parse_args()
    cfg = load_config(args.model, args.overrides)
    _, corpus, encoder = build_corpora_and_encoder(cfg)
    texts = [c.text for c in corpus.candidates][: args.texts]
    print(f"machine: {machine()}")
    print(f"model: {encoder.name}; {len(texts)} candidates, batch {cfg.eval.batch_size}, precision {args.precision}")
    encode_texts(encoder, texts, "passage", cfg.eval.batch_size, precision=args.precision)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        encode_texts(encoder, texts, "passage", cfg.eval.batch_size, precision=args.precision)
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top))
    total = sum(e.self_cpu_time_total for e in events)
    shares = {e.key: e.self_cpu_time_total / total for e in sorted(events, key=lambda e: -e.self_cpu_time_total)}
    matmul = sum(v for k, v in shares.items() if k in MATMUL_OPS)
    attention = sum(v for k, v in shares.items() if ATTENTION_MARK in k)
    print(f"matrix products {matmul:.1%}, attention {attention:.1%}, everything else {1 - matmul - attention:.1%}")
    write_results(f"profile_encode_{args.model}_{args.precision}", {
        "model": args.model, "encoder": encoder.name, "texts": len(texts), "precision": args.precision,
        "batch_size": cfg.eval.batch_size, "matmul_share": matmul, "attention_share": attention,
        "top_self_cpu_shares": dict(list(shares.items())[: args.top]),
    })


if __name__ == "__main__":
    main()
