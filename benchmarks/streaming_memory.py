"""Peak memory of streaming the same number of pairs from shard directories of different sizes.

    PYTHONPATH=. python -m hybridsweep.data.shards --out /tmp/s0.1 --gigabytes 0.1
    PYTHONPATH=. python -m hybridsweep.data.shards --out /tmp/s2 --gigabytes 2
    PYTHONPATH=. python benchmarks/streaming_memory.py /tmp/s0.1 /tmp/s2 [--pairs 1000000]

A directory may be an fsspec URL (``s3://bucket/pairs``, credentials and endpoint from the
environment; docs/engines.md). ``--results NAME`` names the results file (default streaming_memory).

Each directory is streamed in a fresh process through StreamedPairBatches + ResumableLoader (hybrid
batches of 128, one reader), consuming ``--pairs`` pairs (the same for all; by default all pairs
of the smallest directory: one full pass of it). Batches are collated to lists only, so the
figure is the loader's own memory. Printed: peak resident size, its ratio to the smallest
directory's, and pairs/s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from common import write_results
from process_memory import peak_bytes, reset_peak, rss_bytes


def collate_rows(rows: list[dict]) -> dict:
    return {"pairs": len(rows), "is_mono": rows[0]["is_mono"]}


def stream(root: str, pairs: int, batch_size: int) -> dict:
    from hybridsweep.data.shards import read_manifest
    from hybridsweep.data.streaming import ResumableLoader, StreamedPairBatches

    manifest = read_manifest(root)
    baseline = rss_bytes()
    reset_peak()
    start = time.perf_counter()
    loader = ResumableLoader(StreamedPairBatches(root, collate_rows, batch_size, "hybrid", "auto", seed=0))
    seen = 0
    while seen < pairs:
        for batch in loader:
            seen += batch["pairs"]
            if seen >= pairs:
                break
    seconds = time.perf_counter() - start
    return {"root": root, "gigabytes": manifest["bytes"] / 1e9, "pairs": seen, "seconds": seconds,
            "rss_after_imports": baseline, "peak": peak_bytes()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("roots", nargs="*")
    parser.add_argument("--pairs", type=int)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--results", default="streaming_memory")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(stream(args.one, args.pairs, args.batch_size)))
        return
    if args.pairs is None:
        from hybridsweep.data.shards import read_manifest
        args.pairs = min(sum(s["rows"] for p in read_manifest(r)["pools"].values() for s in p) for r in args.roots)
    results = []
    for root in args.roots:
        out = subprocess.run([sys.executable, __file__, "--one", root, "--pairs", str(args.pairs),
                              "--batch-size", str(args.batch_size)], check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    base = results[0]
    for r in results:
        print(f"{r['gigabytes']:7.3f} GB ({r['root']}): {r['pairs']} pairs, peak RSS {r['peak'] / 2**20:7.1f} MiB "
              f"(ratio {r['peak'] / base['peak']:.3f}), after imports {r['rss_after_imports'] / 2**20:6.1f} MiB, "
              f"{r['pairs'] / r['seconds']:,.0f} pairs/s")
    write_results(args.results, {"batch_size": args.batch_size, "pairs": args.pairs, "directories": results,
                                       "peak_ratio_to_smallest": [r["peak"] / base["peak"] for r in results]})


if __name__ == "__main__":
    main()
