"""model=hf: local folders, sentence-transformers Dense heads (LaBSE), the offline error, and the
training switches (gradient checkpointing) on a small randomly initialised BERT saved locally."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel

from hybridsweep.data.synthetic import generate
from hybridsweep.encoders.hf import hf_encoder
from hybridsweep.encoders.tiny import cached_tokenizer
from hybridsweep.losses import InfoNCELoss

TEXTS = ["Maria Keller was born in Bern.", "Maria Keller wurde in Bern geboren.", "Мария Келлер родилась в Берне."]


@pytest.fixture(scope="module")
def st_folder(tmp_path_factory):
    """A small sentence-transformers folder in LaBSE's layout: BERT, CLS pooling, tanh Dense, Normalize."""
    folder = tmp_path_factory.mktemp("labse-like")
    corpus = generate(split="train", n_people=20, languages=["en", "de", "ru"], seed=0)
    tokenizer = cached_tokenizer(corpus, 300, folder / "tok-cache")
    tokenizer.save_pretrained(folder)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
        {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "2_Dense").mkdir()
    (folder / "2_Dense" / "config.json").write_text(json.dumps(
        {"in_features": 32, "out_features": 16, "bias": True, "activation_function": "torch.nn.modules.activation.Tanh"}))
    save_file({"linear.weight": torch.randn(16, 32), "linear.bias": torch.randn(16)}, str(folder / "2_Dense" / "model.safetensors"))
    return folder


def test_dense_head_applies_cls_pooling_then_tanh_layer(st_folder):
    from safetensors.torch import load_file

    encoder = hf_encoder(None, "unused", str(st_folder), pooling="cls", dense_head=True)
    encoder.eval()
    inputs = encoder.tokenize(TEXTS, "query")
    with torch.no_grad():
        ours = encoder(**inputs).numpy()
        # By hand: the reference BERT's first-token state, then tanh(W h + b), then unit length.
        reference_bert = BertModel.from_pretrained(st_folder).eval()
        cls = reference_bert(**inputs).last_hidden_state[:, 0].numpy()
    dense = load_file(str(st_folder / "2_Dense" / "model.safetensors"))
    projected = np.tanh(cls @ dense["linear.weight"].numpy().T + dense["linear.bias"].numpy())
    expected = projected / np.linalg.norm(projected, axis=1, keepdims=True)
    assert ours.shape == (3, 16)
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    assert encoder.name == st_folder.name


def test_dense_head_needs_a_dense_module(tmp_path, st_folder):
    (tmp_path / "modules.json").write_text(json.dumps([{"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"}]))
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (st_folder / name).exists():
            (tmp_path / name).write_bytes((st_folder / name).read_bytes())
    with pytest.raises(ValueError, match=r"modules\.json has 0 sentence_transformers\.models\.Dense modules"):
        hf_encoder(None, "unused", str(tmp_path), dense_head=True)


def test_uncached_hub_id_offline_names_the_id_and_the_local_alternative(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    with pytest.raises(OSError) as raised:
        hf_encoder(None, "unused", "example-org/no-such-encoder-xyz")
    message = str(raised.value)
    assert "'example-org/no-such-encoder-xyz'" in message and "model.name_or_path=/path/to/" in message


def test_gradient_checkpointing_gives_the_same_gradients(st_folder):
    def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
        encoder = hf_encoder(None, "unused", str(st_folder), gradient_checkpointing=checkpointing)
        encoder.eval()  # no dropout, so both runs compute the same function
        switched = any(getattr(m, "gradient_checkpointing", False) for m in encoder.backbone.modules())
        assert switched == checkpointing
        questions = encoder(**encoder.tokenize(TEXTS, "query"))
        passages = encoder(**encoder.tokenize(TEXTS[::-1], "passage"))
        InfoNCELoss()(questions, passages).backward()
        return {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5)


def test_pruned_vocabulary_ids_are_cached_and_equal_a_direct_count(st_folder, tmp_path, monkeypatch):
    """The kept ids are every piece the texts tokenize to (counted here by a plain loop), and a
    second build with the same tokenizer, prefixes and texts reads them without tokenizing."""
    from transformers import AutoTokenizer

    from hybridsweep.encoders import variants

    tokenizer = AutoTokenizer.from_pretrained(st_folder)
    texts = TEXTS * 2
    expected = set(tokenizer.all_special_ids)
    for text in texts:
        for prefix in ("q: ", "p: "):
            expected.update(tokenizer(prefix + text)["input_ids"])
    first = variants.used_token_ids(tokenizer, texts, ("q: ", "p: "), tmp_path)
    assert first.tolist() == sorted(expected)
    assert len(list((tmp_path / "vocabulary").glob("*.pt"))) == 1

    monkeypatch.setattr(type(tokenizer), "__call__", lambda *a, **k: pytest.fail("tokenized again despite the cache"))
    assert variants.used_token_ids(tokenizer, texts, ("q: ", "p: "), tmp_path).tolist() == sorted(expected)
    # Other texts are another key, never the cached ids.
    with pytest.raises(pytest.fail.Exception):
        variants.used_token_ids(tokenizer, texts[:1], ("q: ", "p: "), tmp_path)
