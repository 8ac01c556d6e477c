"""A profile's run archive: exported by one store, imported by an empty one, the same tables."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from conftest import TINY, cli_env, sqlite_store
from hybridsweep.archive import IMPORTED_TAG, RUNS_FILE, import_runs, read_archive
from hybridsweep.tracking.store import HASH_TAG, ROLE_TAG

PROFILE = """
experiment: archive-test
archive: runs
n_boot: 200
common: [{common}]
sweeps:
  strategies:
    - sampling=mono,hybrid
    - batch_size=8
targets:
  table-xquad:
    kind: settings
    sweep: strategies
    output: table_xquad
    caption: "round trip"
  table-bias:
    kind: bias
    sweep: strategies
    output: table_bias
    caption: "round trip"
bias_metrics:
  bias/rank_distance: lower
"""


def paper(tmp_path, store: str, *targets: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "hybridsweep.paper", *targets, "--profile", str(tmp_path / "archive.yaml"),
               "--out", str(tmp_path / "reports")]
    return subprocess.run(command, cwd=tmp_path, env=cli_env(tmp_path, sqlite_store(tmp_path / store)),
                          capture_output=True, text=True, timeout=1800)


def outputs(tmp_path) -> dict[str, bytes]:
    folder = tmp_path / "reports" / "archive"
    return {path.name: path.read_bytes() for path in sorted(folder.glob("table_*"))}


@pytest.mark.slow
def test_an_empty_store_takes_the_archive_and_builds_identical_tables_without_training(tmp_path):
    overrides = [o for o in TINY if not o.startswith("+trainer.enable_progress_bar")]
    (tmp_path / "archive.yaml").write_text(PROFILE.format(common=", ".join(f"'{o}'" for o in overrides)))
    first = paper(tmp_path, "first.db", "paper")
    assert first.returncode == 0, first.stderr[-3000:]
    built = outputs(tmp_path)
    assert {"table_xquad.md", "table_xquad.csv", "table_bias.md"} <= set(built)
    archive = tmp_path / "reports" / "archive" / "runs"
    exported = read_archive(archive)["runs"]
    # The two points and their initializer's zero-shot run, each with its identity and APs.
    roles = sorted(r["tags"][ROLE_TAG] for r in exported)
    assert roles == ["point", "point", "zero-shot"]
    assert all(r["per_question"] is not None for r in exported)
    archived = {path.name: path.read_bytes() for path in archive.iterdir()}

    for path in (tmp_path / "reports" / "archive").glob("table_*"):
        path.unlink()
    second = paper(tmp_path, "second.db", "paper")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "3 run(s) imported" in second.stdout
    assert "nothing to train" in second.stdout
    assert outputs(tmp_path) == built  # byte for byte
    # The second store, rebuilt from the archive, exports the same archive.
    assert {path.name: path.read_bytes() for path in archive.iterdir()} == archived
    store = MlflowClient(sqlite_store(tmp_path / "second.db"))
    runs = store.search_runs([store.get_experiment_by_name("archive-test").experiment_id])
    trained = [r for r in runs if r.data.tags.get(ROLE_TAG) in ("point", "zero-shot")]
    assert len(trained) == 3 and all(IMPORTED_TAG in r.data.tags for r in trained)
    # The imported runs' identities and metrics are the exported ones.
    by_source = {r.data.tags[IMPORTED_TAG]: r for r in trained}
    for record in exported:
        run = by_source[record["run_id"]]
        assert run.data.tags[HASH_TAG] == record["tags"][HASH_TAG]
        assert run.data.metrics == {key: max(history, key=lambda m: (m[0], m[1]))[2] for key, history in record["metrics"].items()}

    # Importing again adds nothing: the identities are all there.
    assert import_runs(sqlite_store(tmp_path / "second.db"), "archive-test", archive) == []


def test_a_folder_that_is_not_an_archive_is_named(tmp_path):
    (tmp_path / RUNS_FILE).write_bytes(b"not gzip")
    with pytest.raises(ValueError, match=RUNS_FILE):
        read_archive(tmp_path)
