"""Two gloo DDP ranks with cross-device negatives train like one process on the global batch."""

from __future__ import annotations

import copy
import functools
import os
import socket

import lightning as L
import pytest
import torch
import torch.multiprocessing as mp
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader

from hybridsweep.data.datamodule import PairCollator
from hybridsweep.data.parallel_qa import training_pairs
from hybridsweep.data.synthetic import generate
from hybridsweep.encoders.tiny import tiny_bert
from hybridsweep.losses import InfoNCELoss
from hybridsweep.model import DualEncoderModule, linear_warmup_decay

GLOBAL_BATCH, WORLD = 16, 2
MINI_BATCH_SIZES = (None, 4)  # plain and gradient-cached steps

ADAMW = functools.partial(torch.optim.AdamW, lr=1e-3)


class _Recorder(L.Callback):
    """Saves the loss and the (DDP-averaged) gradients seen just before the optimiser step."""

    def __init__(self, path):
        self.path = path

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.loss = outputs["loss"].detach()

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.grads = [p.grad.clone() for p in module.encoder.parameters()]

    def on_train_end(self, trainer, module):
        torch.save({"loss": self.loss, "grads": self.grads}, self.path)


def _fit(encoder, batch, mini_batch_size, path, devices, strategy="auto"):
    module = DualEncoderModule(copy.deepcopy(encoder), ADAMW, linear_warmup_decay, InfoNCELoss(), mini_batch_size)
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, max_steps=1, gradient_clip_val=1.0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False, callbacks=[_Recorder(path)])
    trainer.fit(module, DataLoader([batch], batch_size=None))


def _rank(rank, port, encoder, batch, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD),
                      NODE_RANK="0", LOCAL_RANK=str(rank), RANK=str(rank))
    torch.set_num_threads(1)
    share = GLOBAL_BATCH // WORLD
    local = {role: {k: v[rank * share:(rank + 1) * share] for k, v in batch[role].items()}
             for role in ("query", "passage")}
    local["is_mono"] = batch["is_mono"]
    for mini_batch_size in MINI_BATCH_SIZES:
        _fit(encoder, local, mini_batch_size, os.path.join(out_dir, f"rank{rank}-{mini_batch_size}.pt"), WORLD,
             DDPStrategy(process_group_backend="gloo"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_rank_ddp_equals_one_process(tmp_path):
    corpus = generate(n_people=20, languages=["en", "de"], seed=5)
    encoder = tiny_bert(corpus, str(tmp_path / "cache"), vocab_size=300, hidden_size=16, num_layers=1,
                        num_heads=2, intermediate_size=32, max_length=16)
    for module in encoder.modules():  # ranks draw other dropout masks than one process would
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    pairs = training_pairs(corpus)
    rows = [pairs[i] for i in range(0, 8 * GLOBAL_BATCH, 8)]  # distinct question ids
    assert len({r["qid"] for r in rows}) == GLOBAL_BATCH
    batch = PairCollator(encoder.text_tokenizer)(rows)

    _fit(encoder, batch, None, tmp_path / "single.pt", 1)
    mp.start_processes(_rank, args=(_free_port(), encoder, batch, str(tmp_path)), nprocs=WORLD, start_method="spawn")

    single = torch.load(tmp_path / "single.pt")
    for rank in range(WORLD):
        for mini_batch_size in MINI_BATCH_SIZES:
            ddp = torch.load(tmp_path / f"rank{rank}-{mini_batch_size}.pt")
            torch.testing.assert_close(ddp["loss"], single["loss"], atol=1e-5, rtol=0)
            for g, r in zip(ddp["grads"], single["grads"]):
                torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)
    # Negatives really crossed devices: the loss of one rank's half alone is another number.
    half = {role: {k: v[:GLOBAL_BATCH // WORLD] for k, v in batch[role].items()} for role in ("query", "passage")}
    encoder.eval()
    with torch.no_grad():
        half_loss = InfoNCELoss()(encoder(**half["query"]), encoder(**half["passage"]))
    assert abs(half_loss - single["loss"]) > 1e-3
