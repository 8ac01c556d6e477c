"""torch.compile of the backbone: in place, same outputs, and recompilations bounded by padding."""

import math

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from hybridsweep.data.synthetic import generate
from hybridsweep.encoders.compile import compile_encoder, compiled, should_compile
from hybridsweep.encoders.tiny import tiny_bert
from hybridsweep.evaluation.encode import encode_texts, length_sorted_batches, token_counts


@pytest.fixture()
def encoder(tmp_path):
    return tiny_bert(generate(n_people=30, split="train"), cache_dir=str(tmp_path), vocab_size=800)


@pytest.fixture()
def texts():
    corpus = generate(n_people=20, split="eval")
    return [c.text for c in corpus.candidates] + [q.text for q in corpus.questions]


def test_auto_compiles_on_cuda_only_and_bad_values_name_the_key():
    assert should_compile("auto", "cuda") and not should_compile("auto", torch.device("cpu"))
    assert should_compile(True, "cpu") and not should_compile(False, "cuda")
    with pytest.raises(ValueError, match="model.compile='yes'.*true, false or auto"):
        should_compile("yes", "cpu")


def test_compiling_in_place_keeps_state_dict_keys_and_outputs(encoder, texts):
    keys = list(encoder.state_dict())
    eager = encode_texts(encoder, texts[:64], "passage", batch_size=16)
    assert compile_encoder(encoder, False) is encoder and not compiled(encoder)
    torch._dynamo.reset()
    compile_encoder(encoder, True, backend="aot_eager")
    assert compiled(encoder) and list(encoder.state_dict()) == keys
    np.testing.assert_allclose(encode_texts(encoder, texts[:64], "passage", batch_size=16), eager, atol=1e-5)


@pytest.mark.parametrize("multiple", [8, 16])
def test_static_shapes_compile_once_per_distinct_padded_batch_shape(encoder, texts, multiple):
    """With dynamic=False a graph is compiled for every distinct (batch, padded length) shape:
    computed here from the token counts, independently of the compiler."""
    encoder.pad_to_multiple_of = multiple
    counts = token_counts(encoder, texts, "passage")
    shapes = {(len(b), multiple * math.ceil(counts[b].max() / multiple)) for b in length_sorted_batches(counts, 32)}
    assert 1 < len(shapes) <= torch._dynamo.config.recompile_limit
    torch._dynamo.reset()
    counters.clear()
    compile_encoder(encoder, True, dynamic=False, backend="eager")
    encode_texts(encoder, texts, "passage", batch_size=32)
    assert counters["stats"]["unique_graphs"] == len(shapes)
    encode_texts(encoder, texts, "passage", batch_size=32)  # every shape seen: nothing new
    assert counters["stats"]["unique_graphs"] == len(shapes)
