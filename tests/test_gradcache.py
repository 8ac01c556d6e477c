"""Gradient caching equals the uncached loss's gradients (Gao et al. 2021), inside Lightning too."""

from __future__ import annotations

import copy
import functools

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from hybridsweep.data.datamodule import PairCollator
from hybridsweep.data.parallel_qa import training_pairs
from hybridsweep.data.synthetic import generate
from hybridsweep.encoders.tiny import tiny_bert
from hybridsweep.gradcache import cached_contrastive_loss
from hybridsweep.losses import InfoNCELoss
from hybridsweep.model import DualEncoderModule, encode_in_length_buckets, linear_warmup_decay

BATCH, MINI = 64, 8

ADAMW = functools.partial(torch.optim.AdamW, lr=1e-3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    corpus = generate(n_people=40, languages=["en", "de", "ru"], seed=3)
    encoder = tiny_bert(corpus, str(tmp_path_factory.mktemp("cache")), vocab_size=600, hidden_size=32,
                        num_layers=2, num_heads=2, intermediate_size=64, max_length=24)
    pairs = training_pairs(corpus).shuffle(seed=0)
    rows, seen = [], set()
    for row in pairs:
        if row["qid"] not in seen:
            seen.add(row["qid"])
            rows.append(row)
        if len(rows) == BATCH:
            break
    return encoder, PairCollator(encoder.text_tokenizer)(rows)


def _grads(encoder):
    return [p.grad.clone() for p in encoder.parameters()]


def _uncached(encoder, batch, loss_fn, chunk=None):
    """Reference: the plain loss with a full graph, encoding ``chunk`` rows at a time if given."""
    encoder.zero_grad()
    def encode(inputs):
        if chunk is None:
            return encoder(**inputs)
        total = inputs["input_ids"].shape[0]
        return torch.cat([encoder(**{k: v[s:s + chunk] for k, v in inputs.items()}) for s in range(0, total, chunk)])
    loss = loss_fn(encode(batch["query"]), encode(batch["passage"]))
    loss.backward()
    return loss.detach(), _grads(encoder)


def _cached(encoder, batch, loss_fn):
    encoder.zero_grad()
    loss, rows = cached_contrastive_loss(encoder, batch["query"], batch["passage"], loss_fn, MINI)
    assert rows == BATCH
    loss.backward()
    return loss.detach(), _grads(encoder)


@pytest.mark.parametrize("symmetric", [False, True])
def test_cached_equals_uncached_without_dropout(setup, symmetric):
    encoder, batch = setup
    encoder.eval()  # no dropout: the full-batch forward is the reference
    loss_fn = InfoNCELoss(temperature=0.05, symmetric=symmetric)
    ref_loss, ref_grads = _uncached(encoder, batch, loss_fn)
    loss, grads = _cached(encoder, batch, loss_fn)
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=0)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)
    assert max(r.abs().max() for r in ref_grads) > 1e-3  # the comparison is not between zeros


def test_cached_replays_dropout(setup):
    """With dropout on, the cached gradients are those of the loss at the first pass's masks."""
    encoder, batch = setup
    encoder.train()
    loss_fn = InfoNCELoss(temperature=0.05)
    torch.manual_seed(11)
    ref_loss, ref_grads = _uncached(encoder, batch, loss_fn, chunk=MINI)
    torch.manual_seed(11)
    loss, grads = _cached(encoder, batch, loss_fn)
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=0)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)
    torch.manual_seed(12)  # other masks give other gradients: dropout is really active here
    _, other = _uncached(encoder, batch, loss_fn, chunk=MINI)
    assert any(not torch.allclose(o, r, atol=1e-5) for o, r in zip(other, ref_grads))


def test_length_buckets_give_the_embeddings_and_gradients_of_one_call(setup):
    encoder, batch = setup
    encoder.eval()
    passages = batch["passage"]
    lengths = passages["attention_mask"].sum(1)
    assert lengths.min() < lengths.max() <= passages["input_ids"].shape[1]  # the buckets do cut padding
    loss_fn = InfoNCELoss(temperature=0.05)
    ref_loss, ref_grads = _uncached(encoder, batch, loss_fn)
    encoder.zero_grad()
    widths = []
    handle = encoder.backbone.register_forward_pre_hook(lambda _, args, kwargs: widths.append(kwargs["input_ids"].shape[1]),
                                                        with_kwargs=True)
    loss = loss_fn(*(encode_in_length_buckets(encoder, batch[role], 5) for role in ("query", "passage")))
    handle.remove()
    loss.backward()
    torch.testing.assert_close(loss.detach(), ref_loss, atol=1e-5, rtol=0)
    for g, r in zip(_grads(encoder), ref_grads):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)
    assert len(widths) == 10 and widths[5:] == sorted(widths[5:]) and widths[5] < int(lengths.max())


def test_length_buckets_refuse_left_padding(setup):
    encoder, batch = setup
    inputs = {key: value.flip(1) for key, value in batch["passage"].items()}  # padding first
    with pytest.raises(ValueError, match="right-padded"):
        encode_in_length_buckets(encoder, inputs, 4)


class _Recorder(L.Callback):
    """Keeps the (clipped) gradients just before the optimiser step."""

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.grads = [p.grad.clone() for p in module.encoder.parameters()]


def _fit_one_step(encoder, batch, precision, **split):
    module = DualEncoderModule(copy.deepcopy(encoder), ADAMW, linear_warmup_decay, InfoNCELoss(), **split)
    recorder = _Recorder()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=1, precision=precision, gradient_clip_val=0.5,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[recorder])
    trainer.fit(module, DataLoader([batch], batch_size=None))
    return recorder.grads, [p.detach() for p in module.encoder.parameters()]


@pytest.mark.parametrize("split", [{"mini_batch_size": MINI}, {"length_buckets": 5}], ids=["cached", "buckets"])
@pytest.mark.parametrize("precision,tolerance", [("32-true", 1e-5), ("bf16-mixed", 3e-2)])
def test_lightning_step_with_cache_matches_plain_step(setup, precision, tolerance, split):
    """Automatic optimisation, clipping, the LR schedule and mixed precision see the same gradients
    when the batch is encoded in pieces (cached mini-batches, or length buckets)."""
    encoder, batch = setup
    encoder = copy.deepcopy(encoder)
    encoder.backbone.config.hidden_dropout_prob = 0.0
    for module in encoder.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    plain_grads, plain_params = _fit_one_step(encoder, batch, precision)
    cached_grads, cached_params = _fit_one_step(encoder, batch, precision, **split)
    for c, p in zip(cached_grads, plain_grads):
        torch.testing.assert_close(c, p, atol=tolerance, rtol=tolerance)
    for c, p in zip(cached_params, plain_params):
        torch.testing.assert_close(c, p, atol=tolerance, rtol=tolerance)
    assert any(not torch.equal(a, b) for a, b in zip(plain_params, encoder.parameters()))


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_fused_adamw_steps_with_clipped_gradients(setup, precision):
    """The optimiser is fused (no loss scaler in these precisions) and still receives gradients
    clipped to ``gradient_clip_val``, which Lightning itself refuses for fused optimisers in
    mixed precision."""
    encoder, batch = setup
    module = DualEncoderModule(copy.deepcopy(encoder), ADAMW, linear_warmup_decay, InfoNCELoss())
    norms = []

    class StepNorm(L.Callback):
        def on_train_start(self, trainer, pl_module):
            optimizer = trainer.optimizers[0]
            assert all(group["fused"] for group in optimizer.param_groups)
            optimizer.register_step_post_hook(lambda opt, *_: norms.append(float(torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad) for g in opt.param_groups for p in g["params"]
                             if p.grad is not None])))))

    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=1, precision=precision, gradient_clip_val=1e-3,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[StepNorm()])
    trainer.fit(module, DataLoader([batch], batch_size=None))
    assert len(norms) == 1 and norms[0] == pytest.approx(1e-3, rel=1e-3)  # unclipped norms are far larger


def test_a_backbone_loaded_in_eval_mode_trains_with_dropout(setup):
    """from_pretrained returns a backbone in eval mode and Lightning keeps the mode it finds: the
    module switches training on, so dropout masks differ between two forward passes of a step."""
    encoder, batch = setup
    encoder = copy.deepcopy(encoder).eval()
    module = DualEncoderModule(encoder, ADAMW, linear_warmup_decay, InfoNCELoss())
    seen = []

    class DropoutProbe(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            dropouts = [m for m in pl_module.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
            with torch.no_grad():
                first, second = (pl_module.encoder(**batch["query"]) for _ in range(2))
            seen.append((bool(dropouts), all(m.training for m in dropouts), not torch.equal(first, second)))

    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[DropoutProbe()])
    trainer.fit(module, DataLoader([batch], batch_size=None))
    assert seen == [(True, True, True)]
