"""Where a training step's time goes: a torch.profiler table of plain training steps, by operator.

The step is the Lightning module's, built from the config as train.py builds it: forward of both
sides (in ``length_buckets`` calls where set) and InfoNCE under the precision of
``trainer.precision`` (``bf16-mixed``: bf16 autocast), backward, gradient clipping, fused AdamW. One unprofiled warm-up step, then
``--steps`` profiled steps on the config's training batches. Printed: operators by self CPU time;
written: the shares of the groups of :func:`common.operator_shares` (matrix products, attention,
optimizer, gradient clipping, the rest), the inclusive share of the embedding backward, and the
top operators.

    OMP_NUM_THREADS=1 python benchmarks/profile_train_step.py --model e5_small batch_size=32 trainer.precision=bf16-mixed
"""

from __future__ import annotations

import itertools

import torch
from common import (
    build_corpora_and_encoder,
    build_datamodule,
    build_module,
    load_config,
    machine,
    operator_shares,
    parser,
    write_results,
)
from torch.profiler import ProfilerActivity, profile

from hybridsweep.precision import autocast_context


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--steps", type=int, default=3)
    args.add_argument("--top", type=int, default=15)
    args = args.parse_args()
    cfg = load_config(args.model, args.overrides)
    corpus, _, encoder = build_corpora_and_encoder(cfg)
    precision = {"bf16-mixed": "bf16", "32-true": "fp32"}[str(cfg.trainer.precision)]
    batches = list(itertools.islice(build_datamodule(cfg, corpus, encoder).train_dataloader(), args.steps + 1))
    module = build_module(cfg, encoder).train()
    optimizer, _ = module.optimizer_and_schedule(10 * args.steps)
    print(f"machine: {machine()}")
    print(f"model: {encoder.name}; batch {cfg.batch_size}, trainer.precision={cfg.trainer.precision}, {args.steps} steps")

    def step(batch) -> None:
        with autocast_context(precision, torch.device("cpu")):
            loss = module.global_loss(module.encode(batch["query"]), module.encode(batch["passage"]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), cfg.trainer.gradient_clip_val)
        optimizer.step()

    step(batches[0])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches[1:]:
            step(batch)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    shares = operator_shares(prof)
    print(", ".join(f"{group} {share:.1%}" for group, share in shares["groups"].items()),
          "; inclusive: " + ", ".join(f"{name} {share:.1%}" for name, share in shares["inclusive"].items()))
    pruned = "_pruned-vocabulary" if cfg.model.get("prune_vocabulary_to_corpora") else ""
    buckets = f"_{cfg.length_buckets}-buckets" if cfg.get("length_buckets") else ""
    write_results(f"profile_train_step_{args.model}_{cfg.trainer.precision}_{corpus.name}{pruned}{buckets}", {
        "model": args.model, "encoder": encoder.name, "corpus": corpus.name, "batch_size": cfg.batch_size,
        "length_buckets": cfg.get("length_buckets"), "steps": args.steps,
        "trainer_precision": str(cfg.trainer.precision), "group_shares": shares["groups"],
        "inclusive_shares": shares["inclusive"],
        "top_self_cpu_shares": dict(list(shares["operators"].items())[: args.top]),
    })


if __name__ == "__main__":
    main()
