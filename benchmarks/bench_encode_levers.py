"""Encoding levers at fixed batch shapes: attention kernel, bf16 weights, thread count.

For each (batch, length) of ``--shapes``, interleaved per round, the forward pass of the encoder
on random token ids (one padded row per batch) timed against the baseline, bf16 autocast with
SDPA attention and ``torch.get_num_threads()`` threads:

* ``eager attention``: the backbone with ``attn_implementation="eager"`` (matmul, softmax, matmul);
* ``bf16 weights``: a copy of the encoder cast to bfloat16, run without autocast (no casts, layer
  norms and softmax in bf16);
* ``threads x2`` (``--threads``): the baseline with twice the intra-op threads.

Rate: forward passes per second (best of 3 calls per round); ratios are lever / baseline.

    OMP_NUM_THREADS=1 python benchmarks/bench_encode_levers.py --model e5_small --shapes 64x24,64x48,32x128,16x256
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time

import torch
from common import build_corpora_and_encoder, interleave, load_config, machine, parser, write_results


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--shapes", default="64x24,64x48,32x128,16x256", help="batch x length, comma-separated")
    args.add_argument("--threads", action="store_true", help="also time twice the intra-op threads")
    args = args.parse_args()
    cfg = load_config(args.model, args.overrides)
    encoder = build_corpora_and_encoder(cfg)[2].eval()
    eager_attention = copy.deepcopy(encoder)
    eager_attention.backbone.set_attn_implementation("eager")
    bf16_weights = copy.deepcopy(encoder).to(torch.bfloat16)
    threads = torch.get_num_threads()
    print(f"machine: {machine()}")
    print(f"model: {encoder.name} ({args.model}); baseline: bf16 autocast, "
          f"{encoder.backbone.config._attn_implementation} attention, {threads} thread(s)")
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731

    def rate(model, ids, mask, context, n_threads: int = threads):
        def run() -> float:
            torch.set_num_threads(n_threads)
            with torch.inference_mode(), context():
                model(input_ids=ids, attention_mask=mask)
                best = min(timed(model, ids, mask) for _ in range(3))
            torch.set_num_threads(threads)
            return 1 / best
        return run

    figures: dict = {"model": args.model, "encoder": encoder.name, "threads": threads, "rounds": args.rounds, "shapes": {}}
    for shape in args.shapes.split(","):
        batch, length = map(int, shape.split("x"))
        generator = torch.Generator().manual_seed(batch * 1000 + length)
        ids = torch.randint(5, encoder.tokenizer.vocab_size, (batch, length), generator=generator)
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[0, length // 2 :] = 0
        ids[0, length // 2 :] = encoder.tokenizer.pad_token_id
        candidates = {
            "baseline": rate(encoder, ids, mask, autocast),
            "eager attention": rate(eager_attention, ids, mask, autocast),
            "bf16 weights": rate(bf16_weights, ids, mask, contextlib.nullcontext),
        }
        if args.threads:
            candidates["threads x2"] = rate(encoder, ids, mask, autocast, 2 * threads)
        print(f"shape {batch}x{length}:", flush=True)
        rates = interleave(candidates, args.rounds)
        ratios = {name: statistics.median(r / b for r, b in zip(values, rates["baseline"]))
                  for name, values in rates.items() if name != "baseline"}
        print(f"shape {batch}x{length}: " + ", ".join(f"{name} / baseline {r:.2f}x" for name, r in ratios.items()))
        figures["shapes"][shape] = {"passes_per_s": rates, "over_baseline": ratios}
    write_results(f"encode_levers_{args.model}", figures)


def timed(model, ids, mask) -> float:
    start = time.perf_counter()
    model(input_ids=ids, attention_mask=mask)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
