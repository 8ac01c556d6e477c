"""Peak memory of one gradient-cached training step: batch 4096 against batch 64, same mini-batch.

    PYTHONPATH=. python benchmarks/gradcache_memory.py [--mini-batch 64] [--large 4096]

Each configuration runs in a fresh process: the model (the default tiny BERT of conf/model/tiny.yaml)
and the tokenised batch are built first, then the peak resident memory is reset and one training
step (forward, loss, backward, optimiser step) runs. Printed: the peak resident size of the process
during the step, the peak above the resident size before the step, and the ratios large/small.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import torch

# One thread: on a shared machine extra threads only spin; the memory figures do not depend on it.
torch.set_num_threads(1)

from common import write_results  # noqa: E402 (after the thread setting)
from process_memory import peak_bytes, reset_peak, rss_bytes  # noqa: E402


def one_step(batch_size: int, mini_batch_size: int | None) -> dict:
    from hybridsweep.data.datamodule import PairCollator
    from hybridsweep.data.parallel_qa import training_pairs
    from hybridsweep.data.synthetic import generate
    from hybridsweep.encoders.tiny import tiny_bert
    from hybridsweep.gradcache import cached_contrastive_loss
    from hybridsweep.losses import InfoNCELoss

    torch.manual_seed(0)
    corpus = generate(n_people=batch_size // 3 + 1, languages=["en", "de"])
    encoder = tiny_bert(corpus, tempfile.mkdtemp())
    pairs = training_pairs(corpus).to_list()
    rows = list({row["qid"]: row for row in pairs}.values())[:batch_size]
    batch = PairCollator(encoder)(rows)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-4)
    loss_fn = InfoNCELoss()
    # One warm-up step on a small batch allocates the optimiser state and the allocator's pools.
    small = {role: {k: v[:8] for k, v in batch[role].items()} for role in ("query", "passage")}
    cached_contrastive_loss(encoder, small["query"], small["passage"], loss_fn, 8)[0].backward()
    optimizer.step()
    optimizer.zero_grad()
    before = rss_bytes()
    reset_peak()
    start = time.perf_counter()
    loss, _ = cached_contrastive_loss(encoder, batch["query"], batch["passage"], loss_fn, mini_batch_size)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return {"batch_size": batch_size, "mini_batch_size": mini_batch_size, "rss_before": before,
            "peak": peak_bytes(), "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mini-batch", type=int, default=64)
    parser.add_argument("--small", type=int, default=64)
    parser.add_argument("--large", type=int, default=4096)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_step(args.one, args.mini_batch)))
        return
    results = {}
    for batch_size in (args.small, args.large):
        out = subprocess.run([sys.executable, __file__, "--one", str(batch_size), "--mini-batch", str(args.mini_batch)],
                             check=True, capture_output=True, text=True).stdout
        results[batch_size] = json.loads(out.strip().splitlines()[-1])
        r = results[batch_size]
        print(f"batch {batch_size:5d} mini-batch {args.mini_batch}: peak RSS {r['peak'] / 2**20:8.1f} MiB, "
              f"above pre-step RSS {(r['peak'] - r['rss_before']) / 2**20:7.1f} MiB, step {r['seconds']:.1f} s")
    small, large = results[args.small], results[args.large]
    print(f"ratio peak RSS {args.large}/{args.small}: {large['peak'] / small['peak']:.3f}")
    increment = (large['peak'] - large['rss_before']) / (small['peak'] - small['rss_before'])
    print(f"ratio step increment {args.large}/{args.small}: {increment:.3f}")
    write_results("gradcache_memory", {"mini_batch_size": args.mini_batch, "steps": {str(b): r for b, r in results.items()},
                                       "peak_ratio_large_over_small": large["peak"] / small["peak"],
                                       "step_increment_ratio_large_over_small": increment})


if __name__ == "__main__":
    main()
