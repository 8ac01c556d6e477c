"""Encoding precision: bf16 autocast against fp32, dynamic padding against one text at a time."""

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from hybridsweep.data.synthetic import generate
from hybridsweep.encoders.tiny import tiny_bert
from hybridsweep.evaluation.evaluator import embed
from hybridsweep.evaluation.retrieval import evaluate_embeddings
from hybridsweep.precision import has_fast_bf16, resolve_precision, resolve_trainer_precision
from hybridsweep.schema import ConfigError, validate
from hybridsweep.train import config_dir


@pytest.fixture(scope="module")
def encoder_and_corpus(tmp_path_factory):
    train = generate(n_people=30, split="train")
    corpus = generate(n_people=20, split="eval")
    encoder = tiny_bert(train, cache_dir=str(tmp_path_factory.mktemp("cache")), vocab_size=800)
    return encoder, corpus


def test_length_sorted_padded_batches_equal_encoding_each_text_alone(encoder_and_corpus):
    encoder, corpus = encoder_and_corpus
    texts = [c.text for c in corpus.candidates][:40]
    batched = embed(encoder, texts, "passage", batch_size=16)
    encoder.eval()
    with torch.inference_mode():
        alone = np.stack([encoder(**encoder.tokenize([t], "passage"))[0].numpy() for t in texts])
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_bf16_embeddings_and_map_agree_with_fp32(encoder_and_corpus):
    encoder, corpus = encoder_and_corpus
    embeddings = {}
    for precision in ("fp32", "bf16"):
        embeddings[precision] = (
            embed(encoder, [q.text for q in corpus.questions], "query", 64, precision=precision),
            embed(encoder, [c.text for c in corpus.candidates], "passage", 64, precision=precision),
        )
    for side in (0, 1):
        fp32, bf16 = embeddings["fp32"][side], embeddings["bf16"][side]
        assert bf16.dtype == np.float32
        assert not np.array_equal(fp32, bf16), "bf16 autocast changed nothing: it did not take effect"
        assert np.min(np.sum(fp32 * bf16, axis=1)) > 0.99  # cosine of unit vectors
    fp32_metrics = evaluate_embeddings(corpus, *embeddings["fp32"]).metrics
    bf16_metrics = evaluate_embeddings(corpus, *embeddings["bf16"]).metrics
    for key in ("map_full/monolingual", "map_full/crosslingual", "map_full/multilingual"):
        assert abs(fp32_metrics[key] - bf16_metrics[key]) <= 0.005, key


def test_auto_precision_follows_the_hardware():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if has_fast_bf16(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="eval.precision"):
        resolve_precision("fp16", cpu)


def test_config_rejects_an_unknown_precision_naming_the_key():
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["eval.precision=fp16"])
    with pytest.raises(ConfigError, match=r"eval\.precision.*fp32, bf16, auto"):
        validate(cfg)


@pytest.mark.parametrize("accelerator", ["cpu", torch.device("cpu"), "auto"])
def test_auto_trainer_precision_is_bf16_mixed_exactly_where_bf16_is_native(accelerator, monkeypatch):
    for native in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda native=native: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
        assert resolve_trainer_precision("auto", accelerator) == ("bf16-mixed" if native else "32-true")


def test_auto_trainer_precision_on_gpus_follows_cuda_bf16_support(monkeypatch):
    for supported, expected in ((True, "bf16-mixed"), (False, "32-true")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert resolve_trainer_precision("auto", "gpu") == expected
        assert resolve_trainer_precision("auto", "cuda") == expected
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        assert resolve_trainer_precision("auto", "auto") == expected
    assert resolve_trainer_precision("auto", "mps") == "32-true"


def test_explicit_trainer_precisions_pass_through_and_unknown_accelerators_are_named():
    for precision in ("32-true", "bf16-mixed", "16-mixed", 32):
        assert resolve_trainer_precision(precision, "cpu") == precision
    with pytest.raises(ValueError, match="trainer.accelerator='tpu'"):
        resolve_trainer_precision("auto", "tpu")
