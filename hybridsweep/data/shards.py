"""Training pairs as Parquet shards on disk, and the command that writes them from the generator.

Layout of a shard directory::

    manifest.json          {"question_ids": Q, "pools": {"mono": [shard, ...], "cross": [shard, ...]}}
    mono/part-00000.parquet, cross/part-00000.parquet, ...

A shard entry is ``{"path", "rows", "qid_start", "qid_count"}``. Every question id has a fixed
position ``qid_pos`` in one shuffled order, and shard k of either pool holds exactly the pairs of
the ids at positions ``[qid_start, qid_start + qid_count)``, rows shuffled within the shard. Hence
the first ``n`` question ids are a prefix of shards (the last one possibly cut at ``qid_pos < n``):
``data.scale`` selects nested subsets by reading only the shards it needs. All pairs of an id lie
in one shard, so splitting shards across ranks and workers never splits an id.

Writing: ``python -m hybridsweep.data.shards --out DIR --gigabytes N`` appends shards, each the
training pairs (:func:`training_pairs`) of a fresh block of :func:`synthetic.generate` people,
until the directory holds N GB. Block b is generated with seed ``(seed, b)`` and its ids are
prefixed ``b<b>/``: ids are unique across blocks, though invented names recur between blocks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hybridsweep.data.parallel_qa import training_pairs
from hybridsweep.data.synthetic import LANGUAGES, generate

POOLS = ("mono", "cross")
MANIFEST = "manifest.json"


def read_manifest(root: str | Path) -> dict:
    """The manifest of a shard directory, with a clear error when it is missing or malformed."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: data.shards must name a directory written by "
                                f"`python -m hybridsweep.data.shards --out DIR`")
    manifest = json.loads(path.read_text())
    for key in ("question_ids", "pools"):
        if key not in manifest:
            raise ValueError(f"{path}: missing key {key!r}")
    for pool in POOLS:
        if pool not in manifest["pools"]:
            raise ValueError(f"{path}: pools.{pool} missing; expected pools {list(POOLS)}")
    return manifest


def _block_seed(seed: int, block: int) -> int:
    return int(np.random.SeedSequence([seed, block]).generate_state(1)[0])


def write_block(root: Path, manifest: dict, people: int, languages: list[str], seed: int) -> int:
    """Append the shards of one generated block; returns the bytes written."""
    block = len(manifest["pools"]["mono"])
    corpus = generate(n_people=people, languages=languages, seed=_block_seed(seed, block))
    table = training_pairs(corpus).data.table
    rng = np.random.default_rng([seed, block])
    local_ids = corpus.question_ids
    position = dict(zip(local_ids, manifest["question_ids"] + rng.permutation(len(local_ids))))
    table = pa.table({
        "qid": pc.binary_join_element_wise(f"b{block}/", table["qid"], ""),
        "qid_pos": pa.array([position[q] for q in table["qid"].to_pylist()], pa.int64()),
        "question": table["question"], "passage": table["passage"], "is_mono": table["is_mono"],
    }).take(rng.permutation(table.num_rows))
    written = 0
    for pool, flag in (("mono", True), ("cross", False)):
        part = table.filter(pc.equal(table["is_mono"], flag))
        relative = f"{pool}/part-{block:05d}.parquet"
        (root / pool).mkdir(parents=True, exist_ok=True)
        # Uncompressed: the size on disk is the size of the data (templated text compresses ~4x).
        pq.write_table(part, root / relative, compression="none", row_group_size=16_384)
        written += (root / relative).stat().st_size
        manifest["pools"][pool].append({
            "path": relative, "rows": part.num_rows, "qid_start": manifest["question_ids"], "qid_count": len(local_ids),
        })
    manifest["question_ids"] += len(local_ids)
    return written


def write_shards(
    out: str | Path,
    gigabytes: float | None = None,
    shards: int | None = None,
    people_per_shard: int = 2000,
    languages: list[str] | tuple[str, ...] = LANGUAGES,
    seed: int = 0,
) -> dict:
    """Write shards until ``gigabytes`` GB (1e9 bytes) or ``shards`` blocks; returns the manifest."""
    if (gigabytes is None) == (shards is None):
        raise ValueError("give exactly one of gigabytes and shards")
    root = Path(out)
    if (root / MANIFEST).exists():
        raise FileExistsError(f"{root / MANIFEST} exists: write into an empty directory")
    root.mkdir(parents=True, exist_ok=True)
    manifest = {"question_ids": 0, "languages": list(languages), "seed": seed, "pools": {p: [] for p in POOLS}}
    total = 0
    while (total < gigabytes * 1e9) if shards is None else (len(manifest["pools"]["mono"]) < shards):
        total += write_block(root, manifest, people_per_shard, list(languages), seed)
    manifest["bytes"] = total
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="an empty directory to write the shards into")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--gigabytes", type=float, help="total size to write, in GB (1e9 bytes)")
    size.add_argument("--shards", type=int, help="number of blocks (one shard per pool each)")
    parser.add_argument("--people-per-shard", type=int, default=2000)
    parser.add_argument("--languages", nargs="+", default=list(LANGUAGES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    manifest = write_shards(args.out, args.gigabytes, args.shards, args.people_per_shard, args.languages, args.seed)
    rows = sum(s["rows"] for pool in manifest["pools"].values() for s in pool)
    print(f"wrote {len(manifest['pools']['mono'])} blocks, {rows} pairs, {manifest['question_ids']} question ids, "
          f"{manifest['bytes'] / 1e9:.3f} GB to {args.out}")


if __name__ == "__main__":
    main()
