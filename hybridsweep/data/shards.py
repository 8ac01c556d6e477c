"""Training pairs as Parquet shards on disk, and the command that writes them from the generator.

Layout of a shard directory::

    manifest.json          {"format": 2, "question_ids": Q, "blocks": B, "languages": [...],
                            "pools": {"mono": [shard, ...], "cross": [shard, ...]}, ...}
    mono/part-00000.parquet, cross/part-00000.parquet, ...

A shard holds the columns ``qid, qid_pos, q_lang, p_lang, question, passage, is_mono``. A shard
entry is ``{"path", "rows", "ids", "languages", "qid_start", "qid_count"}``: ``rows`` pairs of
``ids`` distinct question ids, ``languages`` the same two counts per question language
(``{"en": {"rows": r, "ids": d}, ...}``; for a monolingual pair the passage shares the language),
which is what per-language batches and the readers' distinct-id check need before reading a row.

Every question id has a fixed position ``qid_pos`` in one shuffled order. The pairs are written in
blocks of ids: block b's shard of a pool holds exactly that pool's pairs of the ids at positions
``[qid_start, qid_start + qid_count)``, rows shuffled within the shard (a pool with no pair in a
block gets no shard for it). Hence the first ``n`` question ids are a prefix of shards (the last one
possibly cut at ``qid_pos < n``): ``data.scale`` selects nested subsets by reading only the shards
it needs. All pairs of an id lie in one shard, so splitting shards across ranks and workers never
splits an id.

Writing: ``python -m hybridsweep.data.shards --out DIR --gigabytes N`` appends shards, each the
training pairs (:func:`training_pairs`) of a fresh block of :func:`synthetic.generate` people,
until the directory holds N GB. Block b is generated with seed ``(seed, b)`` and its ids are
prefixed ``b<b>/``: ids are unique across blocks, though invented names recur between blocks.
Any other table of pairs can be written block by block with :class:`ShardWriter`.

Where: a shard directory is a local path or any fsspec URL, e.g. ``s3://bucket/pairs`` (s3fs, the
``s3`` extra; credentials and endpoint from the environment: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``), for writing and for reading alike.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hybridsweep.data.parallel_qa import training_pairs
from hybridsweep.data.synthetic import LANGUAGES, generate

POOLS = ("mono", "cross")
MANIFEST = "manifest.json"
FORMAT = 2
"""Manifest format: 2 added the question and passage languages (``q_lang``, ``p_lang``) and the
per-language counts of every shard."""
PAIR_COLUMNS = ("qid", "q_lang", "p_lang", "question", "passage", "is_mono")


def shard_path(root: str | Path, relative: str) -> str:
    """``relative`` (a manifest's ``/``-separated path) inside the shard directory ``root``, a path or a URL."""
    return f"{str(root).rstrip('/')}/{relative}"


def read_manifest(root: str | Path) -> dict:
    """The manifest of a shard directory, with a clear error when it is missing, malformed or old."""
    path = shard_path(root, MANIFEST)
    filesystem, located = fsspec.core.url_to_fs(path)
    if not filesystem.isfile(located):
        raise FileNotFoundError(f"{path} not found: data.shards must name a directory written by "
                                f"`python -m hybridsweep.data.shards --out DIR`")
    manifest = json.loads(filesystem.cat_file(located))
    for key in ("question_ids", "pools"):
        if key not in manifest:
            raise ValueError(f"{path}: missing key {key!r}")
    for pool in POOLS:
        if pool not in manifest["pools"]:
            raise ValueError(f"{path}: pools.{pool} missing; expected pools {list(POOLS)}")
    if manifest.get("format", 1) < FORMAT:
        blocks = manifest.get("blocks", len(manifest["pools"]["mono"]))
        languages = " ".join(manifest.get("languages", LANGUAGES))
        raise ValueError(
            f"{path}: the shards were written without the question language of each pair (column q_lang, "
            f"manifest format {manifest.get('format', 1)} < {FORMAT}), which per-language batches and the "
            f"readers' distinct-id check need; rewrite the directory: python -m hybridsweep.data.shards "
            f"--out NEW_DIR --shards {blocks} --languages {languages} --seed {manifest.get('seed', 0)} "
            f"--people-per-shard P (the P it was written with)"
        )
    return manifest


def pair_counts(table: pa.Table) -> dict:
    """Pairs and distinct question ids of a table of pairs, in all and per question language.

    Returns ``{"rows": r, "ids": d, "languages": {q_lang: {"rows": r_l, "ids": d_l}}}``.
    """
    per_language = table.group_by("q_lang").aggregate([("qid", "count"), ("qid", "count_distinct")])
    return {
        "rows": table.num_rows,
        "ids": pc.count_distinct(table["qid"]).as_py(),
        "languages": {
            language: {"rows": rows, "ids": ids}
            for language, rows, ids in zip(per_language["q_lang"].to_pylist(), per_language["qid_count"].to_pylist(),
                                           per_language["qid_count_distinct"].to_pylist())
        },
    }


class ShardWriter:
    """Writes blocks of training pairs into a new shard directory; :meth:`close` writes the manifest.

    Each :meth:`append` is one block: one shard per pool that has pairs in it (a block in one
    language has no cross-lingual shard), its question ids prefixed ``b<block>/`` and placed at the
    next positions of the shuffled id order, rows shuffled within the shard.
    """

    def __init__(self, out: str | Path, seed: int = 0, **settings):
        # A local directory stays a Path, as callers read the shards beside it.
        self.root = Path(out) if fsspec.utils.get_protocol(str(out)) == "file" else str(out)
        self.seed = seed
        self.filesystem, self.located = fsspec.core.url_to_fs(str(out))
        if self.filesystem.exists(shard_path(self.located, MANIFEST)):
            raise FileExistsError(f"{shard_path(out, MANIFEST)} exists: write into an empty directory")
        self.filesystem.makedirs(self.located, exist_ok=True)
        self.manifest = {"format": FORMAT, "question_ids": 0, "blocks": 0, "languages": [], "seed": seed, **settings,
                         "pools": {p: [] for p in POOLS}, "bytes": 0}

    def append(self, pairs: pa.Table) -> int:
        """Append one block of pairs (columns :data:`PAIR_COLUMNS`); returns the bytes written."""
        missing = [c for c in PAIR_COLUMNS if c not in pairs.column_names]
        if missing:
            raise ValueError(f"a block of pairs needs the columns {list(PAIR_COLUMNS)}; missing {missing}")
        manifest = self.manifest
        block = manifest["blocks"]
        rng = np.random.default_rng([self.seed, block])
        local_ids = pc.unique(pairs["qid"]).to_pylist()
        position = dict(zip(local_ids, manifest["question_ids"] + rng.permutation(len(local_ids))))
        table = pa.table({
            "qid": pc.binary_join_element_wise(f"b{block}/", pairs["qid"], ""),
            "qid_pos": pa.array([position[q] for q in pairs["qid"].to_pylist()], pa.int64()),
            **{column: pairs[column] for column in PAIR_COLUMNS[1:]},
        }).take(rng.permutation(pairs.num_rows))
        written = 0
        for pool, flag in (("mono", True), ("cross", False)):
            part = table.filter(pc.equal(table["is_mono"], flag))
            if part.num_rows == 0:
                continue
            relative = f"{pool}/part-{block:05d}.parquet"
            path = shard_path(self.located, relative)
            self.filesystem.makedirs(shard_path(self.located, pool), exist_ok=True)
            # Uncompressed: the size on disk is the size of the data (templated text compresses ~4x).
            with self.filesystem.open(path, "wb") as file:
                pq.write_table(part, file, compression="none", row_group_size=16_384)
            written += self.filesystem.size(path)
            manifest["pools"][pool].append({
                "path": relative, **pair_counts(part),
                "qid_start": manifest["question_ids"], "qid_count": len(local_ids),
            })
        manifest["question_ids"] += len(local_ids)
        manifest["blocks"] += 1
        manifest["languages"] = sorted(set(manifest["languages"]) | set(pc.unique(pairs["q_lang"]).to_pylist()))
        manifest["bytes"] += written
        return written

    def close(self) -> dict:
        """Write ``manifest.json`` and return the manifest."""
        self.filesystem.pipe_file(shard_path(self.located, MANIFEST), json.dumps(self.manifest, indent=1).encode())
        return self.manifest


def _block_seed(seed: int, block: int) -> int:
    return int(np.random.SeedSequence([seed, block]).generate_state(1)[0])


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
    writer = ShardWriter(out, seed, people_per_shard=people_per_shard)
    manifest = writer.manifest
    while (manifest["bytes"] < gigabytes * 1e9) if shards is None else (manifest["blocks"] < shards):
        block_seed = _block_seed(seed, manifest["blocks"])
        corpus = generate(n_people=people_per_shard, languages=list(languages), seed=block_seed)
        writer.append(training_pairs(corpus).data.table)
    return writer.close()


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
    print(f"wrote {manifest['blocks']} blocks, {rows} pairs, {manifest['question_ids']} question ids, "
          f"{manifest['bytes'] / 1e9:.3f} GB to {args.out}")


if __name__ == "__main__":
    main()
