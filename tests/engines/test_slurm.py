"""SLURM: a sweep through Hydra's submitit launcher (`hydra/launcher=slurm`) on a one-host cluster
(pipelines/engines/slurm.sh), into a tracking server on PostgreSQL: one SLURM job per point, a
second invocation trains nothing, and a job cancelled with `scancel` mid-training is resumed by
the next invocation with the metrics of an uninterrupted run."""

from __future__ import annotations

import subprocess
import time

import pytest
from mlflow.tracking import MlflowClient

from conftest import cli_env, run_cli
from hybridsweep.tracking.store import ROLE_TAG

SLURM = ["hydra/launcher=slurm", "resume.heartbeat_s=1", "resume.claim_expiry_s=10", "resume.claim_settle_s=1"]


def _points(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    return [r for r in runs if r.data.tags.get(ROLE_TAG) == "point"]


def _accounting(env: dict[str, str]) -> list[tuple[str, str]]:
    """(job id, state) of every job allocation slurmdbd recorded (steps left out)."""
    out = subprocess.run(["sacct", "-a", "-X", "-n", "-P", "-o", "JobID,State"], env=env, capture_output=True,
                         text=True, check=True).stdout
    return [tuple(line.split("|")[:2]) for line in out.splitlines() if line]


def _job_logs(sweep_dir) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(sweep_dir.glob(".submitit/*/*_log.*")))


@pytest.mark.slow
def test_a_sweep_runs_as_slurm_jobs_and_a_second_invocation_trains_nothing(tmp_path, slurm, postgres_server):
    env = {**cli_env(tmp_path, postgres_server), "SLURM_CONF": slurm["SLURM_CONF"]}
    sweep = ["-m", *SLURM, "batch_size=4,8,16", "hydra.sweep.dir=sweep", "tracking.experiment=slurm"]
    first = run_cli(tmp_path, *sweep, env=env)
    assert first.returncode == 0, first.stderr[-4000:]
    client = MlflowClient(postgres_server)
    points = _points(client, "slurm")
    assert sorted(r.data.params["batch_size"] for r in points) == ["16", "4", "8"]
    assert {r.info.status for r in points} == {"FINISHED"}
    # One array job, one task per point, each recorded COMPLETED by the accounting.
    jobs = _accounting(env)
    assert sorted(state for job, state in jobs if "_" in job) == ["COMPLETED"] * 3, jobs
    # Each point ran in its job's single CPU (the cluster binds a job to its CPUs).
    assert {r.data.params["runtime.torch_threads"] for r in points} == {"1"}
    logs = _job_logs(tmp_path / "sweep")
    assert logs.count("Job completed successfully") >= 3, logs[-3000:]

    second = run_cli(tmp_path, *sweep, env=env)
    assert second.returncode == 0, second.stderr[-4000:]
    again = _points(client, "slurm")
    assert {r.info.run_id: r.info.end_time for r in again} == {r.info.run_id: r.info.end_time for r in points}
    assert len([state for job, state in _accounting(env) if "_" in job]) == 6  # three more jobs ...
    skipped = _job_logs(tmp_path / "sweep").count("finished earlier in run")
    assert skipped == 3, _job_logs(tmp_path / "sweep")[-3000:]  # ... that trained nothing


@pytest.mark.slow
def test_a_job_cancelled_mid_training_is_resumed_by_the_next_invocation(tmp_path, slurm, postgres_server):
    env = {**cli_env(tmp_path, postgres_server), "SLURM_CONF": slurm["SLURM_CONF"]}
    # Long enough that the job is still training when the cancel lands (SIGTERM, then SIGKILL
    # KillWait=5 s later); validation, hence a checkpoint, twice an epoch.
    point = ["batch_size=8", "trainer.max_epochs=12", "+trainer.val_check_interval=0.5"]
    # The uninterrupted run: the same point as a SLURM job too, beside the other, in a folder of its
    # own (its checkpoints are not the cancelled job's). A job's point runs on the one CPU the job
    # is bound to, and the curve depends on the thread count (bf16 matrix products split otherwise).
    (tmp_path / "reference").mkdir()
    sweep = ["-m", *SLURM, *point, "hydra.sweep.dir=sweep"]
    reference = run_cli(tmp_path / "reference", *sweep, "tracking.experiment=cancel-reference", env=env, background=True)
    cancelled = run_cli(tmp_path, *sweep, "tracking.experiment=cancel", env=env, background=True)
    checkpoints = tmp_path / "checkpoints"
    deadline = time.time() + 600
    while not any(checkpoints.rglob("*.ckpt")) and cancelled.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    [job] = [p.name for p in (tmp_path / "sweep" / ".submitit").iterdir() if p.name.isdigit()]
    subprocess.run(["scancel", job], env=env, check=True)
    assert cancelled.wait(timeout=600) != 0  # the launcher reports the job that did not complete
    assert reference.wait(timeout=900) == 0, (tmp_path / "reference" / "cli-0.log").read_text()[-3000:]
    assert dict(_accounting(env))[job].startswith("CANCELLED")

    client = MlflowClient(postgres_server)
    [interrupted] = _points(client, "cancel")
    # Closed KILLED when Lightning turned the SIGTERM into an exit during training, or left RUNNING
    # when the SIGKILL came first (its claim then goes stale): resumable either way, never FAILED.
    assert interrupted.info.status in ("KILLED", "RUNNING")
    resumed = run_cli(tmp_path, *sweep, "tracking.experiment=cancel", env=env)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    [run] = _points(client, "cancel")
    [ref] = _points(client, "cancel-reference")
    assert run.info.run_id == interrupted.info.run_id and run.info.status == "FINISHED"
    assert "Restoring states from the checkpoint" in _job_logs(tmp_path / "sweep")
    curve = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss"))
    expected = sorted((m.step, m.value) for m in client.get_metric_history(ref.info.run_id, "train/loss"))
    assert [step for step, _ in curve] == [step for step, _ in expected]  # every step once
    assert [value for _, value in curve] == pytest.approx([value for _, value in expected], rel=1e-6)
    final, wanted = ({k: v for k, v in r.data.metrics.items() if not k.startswith("time/")} for r in (run, ref))
    assert final == pytest.approx(wanted, rel=1e-6)
