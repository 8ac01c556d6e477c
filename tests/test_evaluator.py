"""Evaluation inside Lightning: on the Trainer's device, every text once over the ranks, and the
weights that ``eval.checkpoint`` names."""

from __future__ import annotations

import functools

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.strategies import SingleDeviceStrategy
from mlflow.tracking import MlflowClient

from conftest import TINY, cli_env, run_cli
from hybridsweep.builders import build_encoder
from hybridsweep.data.synthetic import generate
from hybridsweep.encoders.tiny import tiny_bert
from hybridsweep.evaluation.evaluator import Evaluator, rank_batches
from hybridsweep.evaluation.retrieval import LareqaSuite
from hybridsweep.model import DualEncoderModule
from hybridsweep.schema import config_dir, register_configs
from hybridsweep.tracking.store import ROLE_TAG


def test_the_ranks_share_every_text_exactly_once():
    texts = {"query": [f"q{i}" * (i % 7 + 1) for i in range(23)], "passage": [f"p{i}" * (i % 5 + 1) for i in range(40)]}
    for world in (1, 2, 3):
        seen = {role: [] for role in texts}
        for rank in range(world):
            for role, positions, batch in rank_batches(texts, 4, rank, world):
                assert batch == [texts[role][i] for i in positions]
                assert len(batch) <= 4
                seen[role] += positions
        assert {role: sorted(p) for role, p in seen.items()} == {role: list(range(len(t))) for role, t in texts.items()}


def encoded_alone(suite, encoder) -> dict[str, float]:
    """Reference: the suite's metrics with every text encoded on its own, outside Lightning."""
    encoder.eval()
    with torch.no_grad():
        embeddings = {role: np.stack([encoder(**encoder.tokenize([t], role))[0].numpy() for t in texts])
                      for role, texts in suite.texts().items()}
    return suite.score(embeddings).metrics


class MaterialisingStrategy(SingleDeviceStrategy):
    """Places a module built on the meta device onto the CPU with the given weights: the root
    device differs from where the module was built, as a GPU's does."""

    def __init__(self, weights):
        super().__init__(device=torch.device("cpu"))
        self.weights = weights

    def model_to_device(self) -> None:
        self.model.to_empty(device=self.root_device)
        for name, tensor in [*self.model.named_parameters(), *self.model.named_buffers()]:
            tensor.data.copy_(self.weights[name])


def test_evaluation_encodes_on_the_trainers_root_device(tmp_path):
    corpus = generate(n_people=12, languages=["en", "de"], seed=2)
    encoder = tiny_bert(corpus, str(tmp_path), vocab_size=300, hidden_size=16, num_layers=1, num_heads=2,
                        intermediate_size=32, max_length=24)
    suite = LareqaSuite(generate(n_people=6, languages=["en", "de"], split="eval", seed=2))
    expected = encoded_alone(suite, encoder)
    module = DualEncoderModule(encoder, functools.partial(torch.optim.AdamW, lr=1e-3))
    weights = {name: t.detach().clone() for name, t in [*module.named_parameters(), *module.named_buffers()]}
    module.to("meta")
    devices = []
    original = DualEncoderModule.predict_step

    def spy(self, batch, batch_idx):
        devices.append(next(self.encoder.parameters()).device)
        return original(self, batch, batch_idx)

    module.predict_step = spy.__get__(module)
    trainer = L.Trainer(strategy=MaterialisingStrategy(weights), logger=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False)
    results = Evaluator({"retrieval": suite}, batch_size=8).run(trainer, module, trained=False)
    assert devices and set(devices) == {trainer.strategy.root_device} != {torch.device("meta")}
    assert results["retrieval"].metrics == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_evaluation_leaves_the_global_random_state_alone(tmp_path):
    """Training after an evaluation draws the dropout masks it would draw without one."""
    corpus = generate(n_people=8, languages=["en", "de"], seed=3)
    encoder = tiny_bert(corpus, str(tmp_path), vocab_size=300, hidden_size=16, num_layers=1, num_heads=2,
                        intermediate_size=32, max_length=24)
    suite = LareqaSuite(generate(n_people=4, languages=["en", "de"], split="eval", seed=3))
    module = DualEncoderModule(encoder, functools.partial(torch.optim.AdamW, lr=1e-3))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    Evaluator({"retrieval": suite}, batch_size=8).run(trainer, module, trained=False)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.slow
def test_the_best_checkpoint_is_the_one_evaluated(tmp_path, monkeypatch):
    """With eval.checkpoint=best the logged metrics are those of the checkpoint with the lowest
    val/loss in the run's own history, re-evaluated here without the pipeline."""
    args = ["batch_size=8", "trainer.max_epochs=4", "eval.checkpoint=best", "resume.keep_checkpoints=true",
            "optim.optimizer.lr=5e-3"]
    done = run_cli(tmp_path, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(cli_env(tmp_path)["MLFLOW_TRACKING_URI"])
    [run] = [r for r in client.search_runs([client.get_experiment_by_name("hybridsweep").experiment_id])
             if r.data.tags[ROLE_TAG] == "point"]
    history = sorted((m.value, m.step) for m in client.get_metric_history(run.info.run_id, "val/loss"))
    assert len(history) == 4, "val/loss once per epoch"
    best_step = history[0][1]
    [best] = list((tmp_path / "checkpoints").rglob("best-*.ckpt"))
    # Lightning logs validation metrics at the step counter before the batch's increment.
    assert best.name == f"best-step{best_step + 1}.ckpt"

    monkeypatch.setenv("HYBRIDSWEEP_CACHE", str(tmp_path / "cache"))
    register_configs()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[o for o in TINY if not o.startswith("+trainer")] + args)
    _, encoder = build_encoder(cfg)
    state = torch.load(best, weights_only=False)["state_dict"]
    encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")})
    suite = LareqaSuite(instantiate(cfg.eval.corpus))
    again = encoded_alone(suite, encoder)
    for name in ("map_full/multilingual", "map_full/monolingual", "map_full/crosslingual"):
        assert run.data.metrics[name] == pytest.approx(again[name], abs=1e-5), name
    assert run.data.metrics["val/loss_best"] == pytest.approx(history[0][0])


def test_batches_follow_the_given_lengths():
    texts = {"query": ["aaaa", "b", "cc", "ddd"]}
    tokens = {"aaaa": 1, "b": 4, "cc": 3, "ddd": 2}
    [(role, positions, batch)] = rank_batches(texts, 4, 0, 1, lambda t, _: [tokens[x] for x in t])
    assert batch == ["aaaa", "ddd", "cc", "b"] and positions == [0, 3, 2, 1]
