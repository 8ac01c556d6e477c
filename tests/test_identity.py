"""A point's identity is what changes its results: not where files live, how fast it runs or
how much it prints; the code's results version is part of it."""

from __future__ import annotations

import mlflow
import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import TINY, cli_env, run_cli, sqlite_store
from hybridsweep import RESULTS_VERSION
from hybridsweep.evaluate import evaluate
from hybridsweep.model import DualEncoderModule
from hybridsweep.precision import accelerator_device, resolve_precision, resolve_trainer_precision
from hybridsweep.schema import config_dir, register_configs, resolve_auto
from hybridsweep.tracking.identity import config_hash, zero_shot_hash
from hybridsweep.tracking.store import COMMIT_TAG, RESULTS_VERSION_TAG, ROLE_TAG, ZERO_SHOT_RUN_TAG
from hybridsweep.train import train

REAL = ["data=mlqa_r", "eval=xquad_r"]
register_configs()


def _hash(*overrides: str, version: int = RESULTS_VERSION, zero_shot: bool = False) -> str:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    return zero_shot_hash(cfg, "retrieval", version) if zero_shot else config_hash(cfg, version)


def test_locations_speed_and_verbosity_are_not_identity(monkeypatch, tmp_path):
    monkeypatch.setenv("HYBRIDSWEEP_DATA", "../shared/data")
    monkeypatch.setenv("HYBRIDSWEEP_CACHE", "~/.cache/hybridsweep")
    reference = _hash(*REAL)
    monkeypatch.setenv("HYBRIDSWEEP_DATA", str(tmp_path / "moved" / "data"))
    monkeypatch.setenv("HYBRIDSWEEP_CACHE", str(tmp_path / "elsewhere"))
    monkeypatch.chdir(tmp_path)
    assert _hash(*REAL) == reference
    assert _hash(*REAL, "eval.batch_size=17", "data.num_workers=3", "trainer.log_every_n_steps=1",
                 "+trainer.enable_progress_bar=false", "trainer=ddp_cpu", "resume.heartbeat_s=5",
                 "tracking.experiment=other", "eval.suites.tatoeba.download_dir=/x") == reference


@pytest.mark.parametrize("change", ["seed=1", "optim.optimizer.lr=1e-3", "sampling.mono_batches=mixed",
                                    "data.validation=0.2", "eval.precision=bf16", "eval.checkpoint=best",
                                    "trainer.precision=bf16-mixed", "model.num_layers=3"])
def test_what_changes_results_changes_the_identity(change):
    assert _hash(*REAL, change) != _hash(*REAL)


def test_the_results_version_is_part_of_every_identity():
    assert _hash(version=RESULTS_VERSION + 1) != _hash()
    assert _hash(version=RESULTS_VERSION + 1, zero_shot=True) != _hash(zero_shot=True)


def test_an_initializer_is_the_same_at_every_point_of_a_sweep():
    """Training settings leave the zero-shot evaluation as it is; the model and the evaluation do not."""
    reference = _hash(*REAL, zero_shot=True)
    for training_only in ("batch_size=8", "sampling=mono", "data.scale=0.5", "seed=3", "optim.optimizer.lr=1e-3",
                          "trainer.max_epochs=9", "eval.checkpoint=best"):
        assert _hash(*REAL, training_only, zero_shot=True) == reference, training_only
    for evaluation in ("eval.precision=bf16", "model.num_layers=3", "eval.corpus.languages=[de]"):
        assert _hash(*REAL, evaluation, zero_shot=True) != reference, evaluation
    # One identity per suite: a change to another suite leaves this one's evaluation as it is.
    assert _hash(*REAL, "eval.suites.tatoeba.languages=[de]", zero_shot=True) == reference
    assert _hash(*REAL, "~eval.suites.tatoeba", zero_shot=True) == reference


@pytest.mark.slow
def test_moving_the_working_directory_and_the_cache_retrains_nothing(tmp_path):
    """The same point from another directory with another cache folder is found done; a key that
    changes results trains a new run."""
    store = sqlite_store(tmp_path / "store.db")
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    first = run_cli(first_dir, "batch_size=8", env=cli_env(first_dir, store))
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_cli(second_dir, "batch_size=8", "eval.batch_size=32", env=cli_env(second_dir, store))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished earlier in run" in again.stdout + again.stderr
    changed = run_cli(second_dir, "batch_size=8", "optim.optimizer.lr=1e-3", env=cli_env(second_dir, store))
    assert changed.returncode == 0, changed.stderr[-3000:]
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("hybridsweep").experiment_id])
    points = [r for r in runs if r.data.tags[ROLE_TAG] == "point"]
    assert len(points) == 2 and {r.info.status for r in points} == {"FINISHED"}
    assert {r.data.tags[RESULTS_VERSION_TAG] for r in points} == {str(RESULTS_VERSION)}
    assert all(r.data.tags[COMMIT_TAG] for r in points)
    # The untrained model was evaluated once and both points carry its metrics as init/.
    [zero_shot] = [r for r in runs if r.data.tags[ROLE_TAG] == "zero-shot"]
    for point in points:
        assert point.data.tags[ZERO_SHOT_RUN_TAG] == zero_shot.info.run_id
        assert point.data.metrics["init/map_full/multilingual"] == zero_shot.data.metrics["map_full/multilingual"]


def test_auto_precisions_share_the_identity_of_what_they_resolve_to():
    """resolve_auto, which the entry points run before hashing, makes ``auto`` the concrete value."""
    device = accelerator_device("cpu")
    trained, evaluated = resolve_trainer_precision("auto", device), resolve_precision("auto", device)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        auto = resolve_auto(compose("train", overrides=[*REAL, "trainer.precision=auto", "eval.precision=auto"]))
        explicit = compose("train", overrides=[*REAL, f"trainer.precision={trained}", f"eval.precision={evaluated}"])
    assert (auto.trainer.precision, auto.eval.precision) == (trained, evaluated)
    assert config_hash(auto) == config_hash(explicit)
    assert zero_shot_hash(auto, "retrieval") == zero_shot_hash(explicit, "retrieval")
    assert OmegaConf.to_container(resolve_auto(explicit)) == OmegaConf.to_container(explicit)  # concrete stays


def test_matmul_precision_is_part_of_the_zero_shot_identity_away_from_its_default():
    """TF32 or bf16 products of fp32 matrices change embeddings, so a zero-shot evaluation under
    another ``matmul_precision`` is another evaluation; at the default the identity stays that of a
    config without the key, which is what every earlier zero-shot run recorded."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=REAL)
    identities = {}
    for value in ("highest", "high", "medium"):
        cfg.matmul_precision = value
        identities[value] = zero_shot_hash(cfg, "retrieval")
    without = OmegaConf.to_container(cfg)
    del without["matmul_precision"]
    assert identities["highest"] == zero_shot_hash(OmegaConf.create(without), "retrieval")
    assert len(set(identities.values())) == 3


@pytest.mark.slow
def test_both_entry_points_apply_matmul_precision_and_share_the_zero_shot_run(isolated_env, monkeypatch):
    """``python -m hybridsweep.evaluate`` encodes under the configured ``matmul_precision`` as
    training does, so the zero-shot run it logs is the one a training point of that setting reuses."""
    seen = []
    original = DualEncoderModule.predict_step

    def spy(self, batch, batch_idx):
        seen.append(torch.get_float32_matmul_precision())
        return original(self, batch, batch_idx)

    monkeypatch.setattr(DualEncoderModule, "predict_step", spy)
    overrides = [*TINY, "matmul_precision=medium", "trainer.max_epochs=1", "batch_size=8"]
    try:
        torch.set_float32_matmul_precision("highest")
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            evaluate(compose("train", overrides=overrides))
        evaluated, seen[:] = list(seen), []
        torch.set_float32_matmul_precision("highest")
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            train(compose("train", overrides=overrides))
    finally:
        torch.set_float32_matmul_precision("highest")
    assert evaluated and set(evaluated) == {"medium"}
    assert seen and set(seen) == {"medium"}  # the trained weights only: the zero-shot run was reused
    runs = mlflow.search_runs(experiment_names=["hybridsweep"])
    [zero_shot] = runs.loc[runs[f"tags.{ROLE_TAG}"] == "zero-shot", "run_id"]
    [point] = runs.loc[runs[f"tags.{ROLE_TAG}"] == "point", f"tags.{ZERO_SHOT_RUN_TAG}"]
    assert point == zero_shot
