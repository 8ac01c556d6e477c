"""The exported encoder: sentence-transformers loads it and computes the pipeline's embeddings.

The reference is the pipeline itself (:func:`~hybridsweep.evaluation.evaluator.embed`, the path evaluation takes); the exported
folder is read by sentence-transformers' own loader, offline. Every variant is covered: mean and
CLS pooling, a Dense head, no normalisation, truncated layers, a pruned vocabulary (with texts
whose pieces were pruned), and the MLflow round trip through the export command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pytest
import torch
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient
from torch import nn

from conftest import REPO_ROOT
from hybridsweep.data.synthetic import generate
from hybridsweep.encoders.tiny import tiny_bert
from hybridsweep.encoders.variants import prune_vocabulary, truncate_layers, used_token_ids
from hybridsweep.evaluation.evaluator import embed
from hybridsweep.export import MODEL_TYPE, log_model, logged_model, save_sentence_transformer
from hybridsweep.export import main as export_main
from hybridsweep.tracking.tracker import RunTracker

SentenceTransformer = pytest.importorskip("sentence_transformers").SentenceTransformer

# Pieces the synthetic corpora never contain (Devanagari, Thai, Arabic, a snowman), and a text
# longer than any max_length here, so truncation is compared too.
UNSEEN_TEXTS = [
    "एक महिला को प्रति दिन कितना प्रोटीन खाना चाहिए?",
    "ผู้หญิงควรกินโปรตีนวันละเท่าไหร่ ☃",
    "كم من البروتين يجب أن تأكل المرأة يوميا؟",
    " ".join(["a very long question about the violin and the city of its maker"] * 40),
]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test here may reach the Hugging Face Hub: every hub request fails, in this process (the
    flag is read at import, hence the constant) and in the export command's."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def corpus():
    return generate(12)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def assert_same_embeddings(loaded, encoder, texts: list[str]) -> None:
    """``loaded`` (a SentenceTransformer) embeds each role's texts as the pipeline does, also
    through sentence-transformers' own query/document entry points."""
    pipeline = {role: embed(encoder, texts, role) for role in ("query", "passage")}
    exported = {
        "query": [loaded.encode(texts, prompt_name="query"), loaded.encode_query(texts)],
        "passage": [loaded.encode(texts, prompt_name="passage"), loaded.encode_document(texts)],
    }
    for role, other in (("query", "passage"), ("passage", "query")):
        for embeddings in exported[role]:
            assert embeddings.shape == pipeline[role].shape
            assert cosines(embeddings, pipeline[role]).min() >= 0.9999, role
            # Lengths too (unnormalised heads), to float precision.
            np.testing.assert_allclose(embeddings, pipeline[role], rtol=0, atol=1e-5)
            # The roles' prompts make a difference larger than that: a swap would be caught.
            assert np.abs(embeddings - pipeline[other]).max() > 1e-4


def tiny_encoder(corpus, cache_dir):
    encoder = tiny_bert(corpus, str(cache_dir), vocab_size=500, hidden_size=32, num_layers=2, num_heads=2,
                        intermediate_size=64, max_length=40)
    encoder.prefixes = {"query": "query: ", "passage": "passage: "}
    return encoder


def prune_to(encoder, texts: list[str]) -> None:
    keep = used_token_ids(encoder.tokenizer, texts, tuple(encoder.prefixes.values()))
    prune_vocabulary(encoder.backbone, keep, encoder.tokenizer.unk_token_id)


def pruned_ids_in(encoder, texts: list[str]) -> set[int]:
    """Ids the tokenizer emits for ``texts`` whose piece the pruned embedding does not hold."""
    table = encoder.backbone.get_input_embeddings().old_to_new
    unk_row = int(table[encoder.tokenizer.unk_token_id])
    ids = {i for row in encoder.tokenizer(texts)["input_ids"] for i in row}
    return {i for i in ids if int(table[i]) == unk_row and i != encoder.tokenizer.unk_token_id}


@pytest.mark.parametrize("variant", ["mean", "cls+dense+unnormalized", "truncated+pruned"])
def test_tiny_export_loads_in_sentence_transformers_with_the_same_embeddings(variant, corpus, tmp_path):
    encoder = tiny_encoder(corpus, tmp_path / "cache")
    texts = corpus.texts()[:30] + UNSEEN_TEXTS
    if variant == "cls+dense+unnormalized":
        torch.manual_seed(1)
        encoder.pooling, encoder.normalize = "cls", False
        encoder.head = nn.Sequential(nn.Linear(32, 24), nn.Tanh())
    if variant == "truncated+pruned":
        truncate_layers(encoder.backbone, 1)
        # Pruned to part of the corpus, so that some texts above hold pruned pieces.
        prune_to(encoder, corpus.texts()[:10])
        assert pruned_ids_in(encoder, texts)

    folder = save_sentence_transformer(encoder, tmp_path / "model")
    loaded = SentenceTransformer(str(folder), device="cpu")
    assert_same_embeddings(loaded, encoder, texts)

    assert loaded.max_seq_length == 40
    assert loaded.prompts["query"] == "query: " and loaded.prompts["passage"] == "passage: "
    assert loaded.default_prompt_name is None
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((folder / "modules.json").read_text())]
    expected = {
        "mean": ["Transformer", "Pooling", "Normalize"],
        "cls+dense+unnormalized": ["Transformer", "Pooling", "Dense"],
        "truncated+pruned": ["Transformer", "Pooling", "Normalize"],
    }[variant]
    assert modules == expected
    config = json.loads((folder / "config.json").read_text())
    assert config["num_hidden_layers"] == (1 if variant == "truncated+pruned" else 2)
    assert config["vocab_size"] == len(encoder.tokenizer)


def test_expanded_vocabulary_rows_are_the_rows_the_pruned_model_looks_up(corpus, tmp_path):
    from safetensors.torch import load_file

    encoder = tiny_encoder(corpus, tmp_path / "cache")
    full = encoder.backbone.get_input_embeddings().weight.detach().clone()
    unk = encoder.tokenizer.unk_token_id
    assert unk == 1
    keep = torch.tensor([0, 2, 3, 7, 11])  # plus the unknown token, which prune_vocabulary always keeps
    prune_vocabulary(encoder.backbone, keep, unk)
    saved = load_file(save_sentence_transformer(encoder, tmp_path / "model") / "model.safetensors")
    weight = saved["embeddings.word_embeddings.weight"]
    assert weight.shape == full.shape and not any(key.endswith("old_to_new") for key in saved)
    kept = {0, 1, 2, 3, 7, 11}
    for token_id in range(full.shape[0]):
        # A kept id has its own original row; any other id has the unknown token's row.
        torch.testing.assert_close(weight[token_id], full[token_id if token_id in kept else unk], rtol=0, atol=0)


def test_a_head_that_is_not_dense_is_refused_by_name(corpus, tmp_path):
    encoder = tiny_encoder(corpus, tmp_path / "cache")
    encoder.head = nn.Sequential(nn.Linear(32, 32), nn.LayerNorm(32))
    with pytest.raises(ValueError, match=r"encoder\.head .*LayerNorm.*Dense"):
        save_sentence_transformer(encoder, tmp_path / "model")
    assert not (tmp_path / "model").exists()  # refused before anything is written


def test_mlflow_round_trip_through_the_export_command(corpus, isolated_env, capsys):
    encoder = tiny_encoder(corpus, isolated_env / "cache")
    prune_to(encoder, corpus.texts()[:10])
    uri = os.environ["MLFLOW_TRACKING_URI"]
    client = MlflowClient(uri)
    experiment = client.create_experiment("hybridsweep")
    run = client.create_run(experiment, run_name="bs=32,seed=0")
    bare = client.create_run(experiment, run_name="bs=64,seed=0")
    logged = log_model(RunTracker(uri, run.info.run_id), encoder)
    client.set_terminated(run.info.run_id)

    found = mlflow.search_logged_models(experiment_ids=[experiment], output_format="list")
    assert [(m.model_id, m.source_run_id, m.model_type) for m in found] == [(logged.model_id, run.info.run_id, MODEL_TYPE)]
    assert found[0].status == LoggedModelStatus.READY
    assert [o.model_id for o in client.get_run(run.info.run_id).outputs.model_outputs] == [logged.model_id]

    done = subprocess.run(
        [sys.executable, "-m", "hybridsweep.export", run.info.run_id, "exported"], cwd=isolated_env,
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = SentenceTransformer(str(isolated_env / "exported"), device="cpu")
    assert_same_embeddings(loaded, encoder, corpus.texts()[:20] + UNSEEN_TEXTS)

    # The same command in this process: a run without a model, and a folder already used.
    with pytest.raises(SystemExit) as refused:
        export_main([bare.info.run_id, "other"])
    assert refused.value.code == 1
    message = capsys.readouterr().err
    assert bare.info.run_id in message and "bs=64,seed=0" in message and "no logged" in message
    assert not (isolated_env / "other").exists()
    with pytest.raises(SystemExit) as occupied:
        export_main([run.info.run_id, "exported"])
    assert occupied.value.code == 1 and "exported exists and is not an empty folder" in capsys.readouterr().err


def test_a_model_whose_files_could_not_be_stored_is_failed_and_not_exported(corpus, isolated_env, monkeypatch):
    encoder = tiny_encoder(corpus, isolated_env / "cache")
    uri = os.environ["MLFLOW_TRACKING_URI"]
    tracker = RunTracker(uri, MlflowClient(uri).create_run(MlflowClient(uri).create_experiment("hybridsweep"),
                                                           run_name="bs=32,seed=0").info.run_id)
    client = tracker.client

    def disk_full(model_id, local_dir, artifact_path=None):
        raise OSError("No space left on device")

    monkeypatch.setattr(client, "log_model_artifacts", disk_full)
    with pytest.raises(OSError, match="No space left"):
        log_model(tracker, encoder)
    [model] = client.search_logged_models([client.get_run(tracker.run_id).info.experiment_id])
    assert model.status == LoggedModelStatus.FAILED
    with pytest.raises(LookupError, match=rf"run {tracker.run_id} \(bs=32,seed=0\) has no logged"):
        logged_model(uri, tracker.run_id, MODEL_TYPE)


@pytest.mark.slow
@pytest.mark.parametrize(("num_layers", "pruned"), [(2, True), (1, False)])
def test_e5_small_export_loads_in_sentence_transformers_with_the_same_embeddings(num_layers, pruned, corpus, e5_cache, tmp_path):
    from hybridsweep.encoders.e5 import e5_small

    encoder = e5_small(corpus, str(e5_cache), num_layers=num_layers, prune_vocabulary_to_corpora=pruned)
    texts = corpus.texts()[:20] + UNSEEN_TEXTS
    if pruned:
        assert pruned_ids_in(encoder, UNSEEN_TEXTS)
    folder = save_sentence_transformer(encoder, tmp_path / "model")
    loaded = SentenceTransformer(str(folder), device="cpu")
    assert loaded.prompts["query"] == "query: " and loaded.prompts["passage"] == "passage: "
    assert_same_embeddings(loaded, encoder, texts)
