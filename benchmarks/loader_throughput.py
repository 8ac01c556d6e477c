"""Loader throughput against the training step's consumption, on the same machine and run.

    PYTHONPATH=. python benchmarks/loader_throughput.py /tmp/s0.1 [--batch-size 128] [--steps 20]

Loader: StreamedPairBatches from the shard directory, tokenised by the tiny BERT's tokenizer
(PairCollator), one reader in the main process (data.num_workers=0). Consumer: the training step of
DualEncoderModule (encode, InfoNCE, backward, AdamW) on batches of the same size. Printed: pairs/s
of each and loader/consumer; a ratio above 1 means the loader keeps up with training.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time

import torch

torch.set_num_threads(1)  # both sides on one thread: a like-for-like ratio on a shared machine

from common import write_results  # noqa: E402


def main() -> None:
    from hybridsweep.data.datamodule import PairCollator
    from hybridsweep.data.streaming import ResumableLoader, StreamedPairBatches
    from hybridsweep.data.synthetic import generate
    from hybridsweep.encoders.tiny import tiny_bert
    from hybridsweep.model import DualEncoderModule

    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    encoder = tiny_bert(generate(n_people=400), tempfile.mkdtemp())
    loader = ResumableLoader(StreamedPairBatches(args.root, PairCollator(encoder), args.batch_size, seed=0))
    iterator = iter(loader)
    next(iterator)  # opening the streams is paid once per run, not per batch
    start = time.perf_counter()
    batches = list(itertools.islice(iterator, args.steps))
    loader_rate = args.steps * args.batch_size / (time.perf_counter() - start)

    module = DualEncoderModule(encoder)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    module.training_step(batches[0], 0).backward()  # warm-up
    optimizer.step()
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        optimizer.zero_grad()
        module.training_step(batch, i).backward()
        optimizer.step()
    step_rate = args.steps * args.batch_size / (time.perf_counter() - start)
    print(f"loader {loader_rate:,.0f} pairs/s, training step {step_rate:,.0f} pairs/s, "
          f"ratio loader/step {loader_rate / step_rate:.2f} (batch {args.batch_size}, {args.steps} steps)")
    write_results("loader_throughput", {"batch_size": args.batch_size, "steps": args.steps,
                                        "loader_pairs_per_s": loader_rate, "step_pairs_per_s": step_rate,
                                        "loader_over_step": loader_rate / step_rate})


if __name__ == "__main__":
    main()
