"""torch.compile of the backbone: in place, same outputs, and recompilations bounded by padding."""

import math

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch._dynamo.utils import counters

from conftest import cli_env, run_cli
from hybridsweep.data.synthetic import generate
from hybridsweep.encoders.compile import compile_encoder, compiled, should_compile
from hybridsweep.encoders.tiny import tiny_bert
from hybridsweep.evaluation.evaluator import embed, length_sorted_batches
from hybridsweep.tracking.store import ROLE_TAG


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
    eager = embed(encoder, texts[:64], "passage", batch_size=16)
    assert compile_encoder(encoder, False) is encoder and not compiled(encoder)
    torch._dynamo.reset()
    compile_encoder(encoder, True, backend="aot_eager")
    assert compiled(encoder) and list(encoder.state_dict()) == keys
    np.testing.assert_allclose(embed(encoder, texts[:64], "passage", batch_size=16), eager, atol=1e-5)


@pytest.mark.parametrize("multiple", [8, 16])
def test_static_shapes_compile_once_per_distinct_padded_batch_shape(encoder, texts, multiple):
    """With dynamic=False a graph is compiled for every distinct (batch, padded length) shape:
    computed here from the token counts, independently of the compiler."""
    encoder.pad_to_multiple_of = multiple
    counts = np.asarray(encoder.text_tokenizer.lengths(texts, "passage"))
    shapes = {(len(b), multiple * math.ceil(counts[b].max() / multiple)) for b in length_sorted_batches(counts, 32)}
    assert 1 < len(shapes) <= torch._dynamo.config.recompile_limit
    torch._dynamo.reset()
    counters.clear()
    compile_encoder(encoder, True, dynamic=False, backend="eager")
    embed(encoder, texts, "passage", batch_size=32)
    assert counters["stats"]["unique_graphs"] == len(shapes)
    embed(encoder, texts, "passage", batch_size=32)  # every shape seen: nothing new
    assert counters["stats"]["unique_graphs"] == len(shapes)


@pytest.mark.slow
def test_a_compiled_point_trains_and_evaluates_as_the_eager_one(tmp_path):
    """model.compile=true through the command line: the backbone is compiled (Inductor, on the
    CPU), the compile time is logged inside the overhead, and the metrics are the eager point's
    within float tolerance (dropout off, fp32: the two compute the same functions)."""
    point = ["batch_size=8", "trainer.max_epochs=1", "model.dropout=0", "trainer.precision=32-true",
             "eval.precision=fp32", "eval.before_training=false"]
    for setting in ("false", "true"):  # model.compile is not identity: one experiment each
        done = run_cli(tmp_path, *point, f"model.compile={setting}", f"tracking.experiment=compile-{setting}")
        assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(cli_env(tmp_path)["MLFLOW_TRACKING_URI"])
    runs = {}
    for setting in ("false", "true"):
        experiment = client.get_experiment_by_name(f"compile-{setting}").experiment_id
        [runs[setting]] = [r for r in client.search_runs([experiment]) if r.data.tags[ROLE_TAG] == "point"]
    eager, compiled_run = runs["false"].data, runs["true"].data
    assert eager.params["runtime.compiled"] == "False" and compiled_run.params["runtime.compiled"] == "True"
    assert eager.metrics["time/compile_s"] == 0
    assert 0 < compiled_run.metrics["time/compile_s"] < compiled_run.metrics["time/overhead_s"]
    for name in ("train/loss", "val/loss", "map_full/monolingual", "map_full/crosslingual", "map_full/multilingual"):
        assert compiled_run.metrics[name] == pytest.approx(eager.metrics[name], abs=2e-3), name
