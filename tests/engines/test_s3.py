"""Object storage: shards written to and streamed from an S3 server on 127.0.0.1 (moto's server
mode) through s3fs, credentials and endpoint from the environment: the batches, the nested data
scales and the mid-epoch resumption of local shards, and a training run from the command line."""

from __future__ import annotations

import itertools

import pytest
from mlflow.tracking import MlflowClient
from test_streaming import (
    BATCH,
    SEED,
    _run,
    collate_ids,
    in_memory_rows,
    naive_batches,
    naive_types,
    pair,
    reference_keys,
    reference_streams,
)

from conftest import cli_env, run_cli
from hybridsweep.data.shards import read_manifest, write_shards
from hybridsweep.data.streaming import ResumableLoader, StreamedPairBatches, select_shards

SHARDS = dict(shards=4, people_per_shard=20, languages=["en", "de", "ru"], seed=3)


@pytest.fixture(scope="module")
def shards(s3_server, tmp_path_factory):
    """The same shards (those of tests/test_streaming.py) in the bucket and on the local disk."""
    local = tmp_path_factory.mktemp("local-shards")
    write_shards(local, **SHARDS)
    remote = "s3://pairs/shards"
    write_shards(remote, **SHARDS)
    return remote, local


def test_the_manifest_in_the_bucket_is_the_local_one(shards):
    remote, local = shards
    assert read_manifest(remote) == read_manifest(local)


@pytest.mark.parametrize("mono_batches", ["per_language", "mixed"])
def test_batches_streamed_from_s3_are_those_of_the_pairs_in_memory(shards, mono_batches):
    remote, local = shards
    stream = StreamedPairBatches(remote, collate_ids, BATCH, "hybrid", "auto", seed=SEED, mono_batches=mono_batches)
    loader = ResumableLoader(stream)
    got = [(b["is_mono"], b["pairs"]) for b in itertools.chain(loader, loader)]  # two epochs
    mono, cross = in_memory_rows(local, "mono"), in_memory_rows(local, "cross")  # read by pyarrow from disk
    keys = reference_keys(naive_types(stream.mix_ratio, 2 * len(stream)), got, mono_batches)
    assert got == list(naive_batches(reference_streams(mono, cross, mono_batches), BATCH, keys))


def test_data_scales_select_the_same_nested_shards_as_on_disk(shards):
    remote, local = shards
    total = read_manifest(remote)["question_ids"]
    for scale in (0.3, 2 * total // 3, total):
        n_remote, from_bucket = select_shards(remote, scale)
        n_local, from_disk = select_shards(local, scale)
        assert n_remote == n_local
        for pool in ("mono", "cross"):
            assert [s["path"] for s in from_bucket[pool]] == [f"{remote}/{s['path'][len(str(local)) + 1:]}"
                                                               for s in from_disk[pool]]
            assert [{k: v for k, v in s.items() if k != "path"} for s in from_bucket[pool]] == \
                [{k: v for k, v in s.items() if k != "path"} for s in from_disk[pool]]
        # Every pair streamed is one of the scale's question ids, read from disk by pyarrow.
        pairs = {tuple(p) for b in ResumableLoader(StreamedPairBatches(remote, collate_ids, 8, "mono", seed=1, scale=scale))
                 for p in b["pairs"]}
        assert pairs <= {tuple(pair(r)) for r in in_memory_rows(local, "mono", id_limit=n_local)}


@pytest.mark.slow
def test_a_run_streaming_from_s3_resumes_mid_epoch_where_it_stopped(shards, tmp_path):
    remote, _ = shards
    epoch = len(ResumableLoader(StreamedPairBatches(remote, collate_ids, BATCH, "hybrid", "auto", seed=SEED, scale=0.5)))
    total, stop = epoch + 6, epoch - 6  # a checkpoint in the middle of the first epoch; runs into the second
    whole = _run(remote, tmp_path / "whole", total, 0, "per_language", "streamed", stop)
    checkpoint = next((tmp_path / "whole").glob(f"*step={stop}.ckpt"))
    resumed = _run(remote, tmp_path / "resumed", total, 0, "per_language", "streamed", stop, ckpt_path=str(checkpoint))
    assert [s for s, _ in whole] == list(range(total))
    assert resumed == whole[stop:]


@pytest.mark.slow
def test_training_from_the_command_line_streams_from_s3(shards, tmp_path, s3_server):
    remote, local = shards
    # 40 question ids (a count): a few dozen steps.
    done = run_cli(tmp_path, "data=streaming", f"data.shards={remote}", "data.scale=40", "batch_size=8",
                   "trainer.max_epochs=1", env=cli_env(tmp_path, **s3_server))
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(cli_env(tmp_path)["MLFLOW_TRACKING_URI"])
    [run] = [r for r in client.search_runs([client.get_experiment_by_name("hybridsweep").experiment_id])
             if r.data.tags.get("hybridsweep.role") == "point"]
    assert run.info.status == "FINISHED"
    _, selected = select_shards(local, 40)
    assert run.data.params["data.pairs_mono"] == str(sum(s["rows"] for s in selected["mono"]))
    assert run.data.params["data.question_ids"] == "40"
    assert run.data.params["data.shards"] == remote
