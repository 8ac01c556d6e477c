"""The offline protocol end to end: train on MLQA-R, evaluate zero-shot on XQuAD-R and Tatoeba."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from hybridsweep.train import config_dir, train


def _config(shared_data_dir, *overrides):
    root = str(shared_data_dir)
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose("train", overrides=[
            f"data.corpus.root={root}", f"eval.corpus.root={root}", f"eval.suites.tatoeba.root={root}",
            *overrides,
        ])


@pytest.mark.slow
def test_train_mlqa_r_evaluate_xquad_r(shared_data_dir, isolated_env):
    cfg = _config(
        shared_data_dir, "data=mlqa_r", "eval=xquad_r",
        # Two languages and 120 question ids keep this short; the configs default to everything.
        "data.corpus.languages=[en,de]", "data.scale=120", "eval.corpus.languages=[en,de]",
        "eval.suites.tatoeba.languages=[de]", "eval.before_training=false",
        "trainer.max_epochs=1", "batch_size=8", "model.num_layers=1",
    )
    train(cfg)
    client = MlflowClient()
    run = client.search_runs([client.get_experiment_by_name("hybridsweep").experiment_id])[0]
    metrics = run.data.metrics
    for name in ("map_full/multilingual", "map_full/monolingual", "map_full/crosslingual",
                 "map_at_20/multilingual", "map_full/pair/de-en", "tatoeba/accuracy/de-en", "tatoeba/accuracy/en-de"):
        assert 0 < metrics[name] <= 1, name
    # Rank distance spans at most the pool; the other two are signed.
    assert 0 <= metrics["bias/rank_distance"] < metrics["eval/candidates"]
    assert abs(metrics["bias/same_lang_rank_gap"]) < metrics["eval/candidates"]
    assert -1 <= metrics["bias/same_lang_excess_at_20"] <= 1
    assert run.data.params["eval.corpus_name"] == "xquad-r" and run.data.params["data.train_corpus"] == "mlqa-r"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"map_full_pairs.png", "map_full_pairs.csv", "tatoeba"} <= artifacts


def test_training_and_evaluating_on_one_set_is_refused(shared_data_dir, isolated_env):
    cfg = _config(shared_data_dir, "data=mlqa_r", "eval=mlqa_r", "data.corpus.languages=[de]",
                  "eval.corpus.languages=[de]", "eval.suites.tatoeba.languages=[de]")
    with pytest.raises(ValueError, match="refusing to evaluate on the training corpus 'mlqa-r'"):
        train(cfg)
