"""MLflow on PostgreSQL: the claim tests of the SQLite store and of the SQLite-backed server, run
against a tracking server whose backend store is a PostgreSQL cluster started for them."""

from __future__ import annotations

import pytest
import sqlalchemy
from test_claims import _trained_once
from test_sweep import check_killed_point_resumes


@pytest.mark.slow
def test_the_server_stores_runs_in_postgresql(postgres, postgres_server):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(postgres_server)
    run = client.create_run(client.create_experiment("where"), run_name="probe")
    with sqlalchemy.create_engine(postgres).connect() as connection:
        names = connection.execute(sqlalchemy.text("SELECT name FROM runs WHERE run_uuid = :id"), {"id": run.info.run_id})
        assert names.scalar_one() == "probe"


@pytest.mark.slow
def test_two_invocations_of_one_sweep_train_each_point_once_with_postgresql(tmp_path, postgres_server):
    _trained_once(tmp_path, postgres_server, "concurrent-postgresql")


@pytest.mark.slow
def test_a_killed_point_resumes_with_postgresql(tmp_path, postgres_server):
    check_killed_point_resumes(tmp_path, postgres_server)
