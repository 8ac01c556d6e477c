"""Training-step throughput with length buckets (``length_buckets``) against one padded call.

The same real batches (the config's data module, e.g. MLQA-R under ``experiment=paper``) go
through the module's training step and backward (under bf16 autocast when
``trainer.precision=bf16-mixed``, as Lightning's plugin runs it), once with each role's texts encoded in one call
padded to the batch's longest text (``length_buckets=null``, the baseline) and once per bucket
count, interleaved round by round. The optimizer step is left out: it is the same work in every
variant. The padded-token counts of each variant are printed beside the rates.

    HYBRIDSWEEP_DATA=../shared/data OMP_NUM_THREADS=2 python benchmarks/bench_length_buckets.py \\
        --model e5_small experiment=paper data=mlqa_r eval=xquad_r model.freeze_word_embeddings=true
"""

from __future__ import annotations

import itertools
import time
import warnings

import torch
from common import (
    build_corpora_and_encoder,
    build_datamodule,
    build_module,
    interleave,
    load_config,
    machine,
    parser,
    ratio_report,
    step_precision,
    write_results,
)

from hybridsweep.model import DualEncoderModule, length_bucket_rows
from hybridsweep.precision import autocast_context


def padded_tokens(inputs: dict[str, torch.Tensor], buckets: int | None) -> int:
    """Token positions the encoder computes for one role's rows, in one call or in buckets."""
    lengths = inputs["attention_mask"].sum(1)
    if buckets is None:
        return int(lengths.numel() * inputs["input_ids"].shape[1])
    return int(sum(len(rows) * lengths[rows].max() for rows in length_bucket_rows(lengths, buckets)))


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--batches", type=int, default=2, help="batches per measurement")
    args.add_argument("--buckets", type=int, nargs="+", default=[4, 8], help="bucket counts to measure")
    args = args.parse_args()
    cfg = load_config(args.model, [*args.overrides, "model.compile=false"])
    corpus, _, encoder = build_corpora_and_encoder(cfg)
    datamodule = build_datamodule(cfg, corpus, encoder)
    datamodule.setup("fit")
    batches = list(itertools.islice(iter(datamodule.train_dataloader()), args.batches))
    module: DualEncoderModule = build_module(cfg, encoder)
    module.train()
    precision = str(cfg.trainer.precision)
    autocast = autocast_context(step_precision(cfg), torch.device("cpu"))
    variants = {"one call": None, **{f"{b} buckets": b for b in args.buckets}}

    def rate(buckets: int | None):
        def run() -> float:
            module.length_buckets = buckets
            start = time.perf_counter()
            for index, batch in enumerate(batches):
                with autocast:
                    loss = module.training_step(batch, index)
                loss.backward()
                module.zero_grad(set_to_none=True)
            return sum(len(b["query"]["input_ids"]) for b in batches) / (time.perf_counter() - start)
        return run

    tokens = {name: sum(padded_tokens(b[role], n) for b in batches for role in ("query", "passage"))
              for name, n in variants.items()}
    real = sum(int(b[role]["attention_mask"].sum()) for b in batches for role in ("query", "passage"))
    print(machine())
    for name, count in tokens.items():
        print(f"  {name}: {count:,} token positions ({count / real:.2f}x the {real:,} real tokens)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer: logging is moot here
        rates = interleave({name: rate(n) for name, n in variants.items()}, args.rounds)
    figures = {}
    for name in list(variants)[1:]:
        ratios = ratio_report({"one call": rates["one call"], name: rates[name]}, name, "pairs/s")
        figures[name] = {"pairs_per_s": rates[name], "speedup_vs_one_call": ratios["one call"],
                         "token_positions": tokens[name]}
    figures["one call"] = {"pairs_per_s": rates["one call"], "token_positions": tokens["one call"]}
    write_results(f"length_buckets_batch{cfg.batch_size}", {"model": args.model, "overrides": args.overrides,
                                                              "batch_size": cfg.batch_size, "precision": precision,
                                                              "batches": args.batches, "real_tokens": real, **figures})


if __name__ == "__main__":
    main()
