"""Where encoding time goes: a torch.profiler table of one evaluation pass, by operator.

Encodes the first ``--texts`` evaluation candidates (passage role) with
:func:`~hybridsweep.evaluation.evaluator.embed` (a run's path: ``trainer.predict``) at
``--precision`` under ``torch.profiler`` (CPU activities), after one unprofiled warm-up pass, and
prints the operators by self CPU time. Written: each operator's share of the profiled self CPU time
and the shares of the groups of :func:`common.operator_shares` (matrix products, attention, the
rest).

OMP_NUM_THREADS=1 HYBRIDSWEEP_DATA=../shared/data python benchmarks/profile_encode.py --model
e5_small eval=xquad_r"""

from __future__ import annotations

from common import build_corpora_and_encoder, load_config, machine, operator_shares, parser, write_results
from torch.profiler import ProfilerActivity, profile

from hybridsweep.evaluation.evaluator import embed, encoding_trainer


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--texts", type=int, default=1000)
    args.add_argument("--precision", default="bf16")
    args.add_argument("--top", type=int, default=15)
    args = args.parse_args()
    trainer = encoding_trainer("cpu")  # the pipeline's encoding path (trainer.predict), one Trainer for every pass
    cfg = load_config(args.model, args.overrides)
    _, corpus, encoder = build_corpora_and_encoder(cfg)
    texts = [c.text for c in corpus.candidates][: args.texts]
    print(f"machine: {machine()}")
    print(f"model: {encoder.name}; {len(texts)} candidates, batch {cfg.eval.batch_size}, precision {args.precision}")
    embed(encoder, texts, "passage", cfg.eval.batch_size, precision=args.precision, trainer=trainer)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        embed(encoder, texts, "passage", cfg.eval.batch_size, precision=args.precision, trainer=trainer)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    shares = operator_shares(prof)
    print(", ".join(f"{group} {share:.1%}" for group, share in shares["groups"].items()),
          "; inclusive: " + ", ".join(f"{name} {share:.1%}" for name, share in shares["inclusive"].items()))
    write_results(f"profile_encode_{args.model}_{args.precision}", {
        "model": args.model, "encoder": encoder.name, "texts": len(texts), "precision": args.precision,
        "batch_size": cfg.eval.batch_size, "group_shares": shares["groups"],
        "inclusive_shares": shares["inclusive"],
        "top_self_cpu_shares": dict(list(shares["operators"].items())[: args.top]),
    })


if __name__ == "__main__":
    main()
