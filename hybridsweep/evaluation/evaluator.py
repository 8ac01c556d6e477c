"""Evaluation inside Lightning: every suite's texts encoded by ``trainer.predict`` on the Trainer's
devices, in ``eval.precision``, with the weights ``eval.checkpoint`` names.

The texts of all suites form one list per role. They are batched in order of token count (each
batch padded only to its own longest text: :func:`length_sorted_batches`) and the batches are
dealt round-robin to the ranks, so under DDP every rank encodes its share; the embeddings are then
gathered to global rank zero, which alone scores the suites (and logs them). Lightning places the
model: the evaluation never moves it. :func:`embed` is the same path for texts outside a run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from hybridsweep.evaluation.figures import heatmap
from hybridsweep.evaluation.suites import EvalSuite, SuiteResult
from hybridsweep.model import DualEncoderModule, Role, TextEncoder, TextTokenizer
from hybridsweep.precision import Precision, autocast_context
from hybridsweep.tracking.tracker import RunTracker


class TextBatches:
    """Collate for a loader of prepared batches ``(role, positions, texts)``: tokenised inputs and
    the texts' positions in the global list of their role."""

    def __init__(self, tokenizer: TextTokenizer):
        self.tokenizer = tokenizer

    def __call__(self, batch: tuple[Role, list[int], list[str]]) -> dict:
        role, positions, texts = batch
        return {"role": role, "index": torch.tensor(positions), "inputs": self.tokenizer(texts, role)}


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Text indices in batches of ``batch_size``, in ascending order of length (ties keep their order).

    A batch is padded to its longest text, so its share of real tokens is
    ``sum(lengths[batch]) / (len(batch) * max(lengths[batch]))``; sorting by token count (not by
    characters, which differ in tokens per character across scripts) keeps that share near 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is not allowed: expected an integer > 0")
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def rank_batches(texts: Mapping[Role, list[str]], batch_size: int, rank: int, world_size: int,
                 length: Callable[[list[str], Role], list[int]] | None = None) -> list[tuple]:
    """This rank's batches: each role's texts in :func:`length_sorted_batches` by ``length``
    (default: characters), dealt round-robin."""
    batches = []
    for role, role_texts in texts.items():
        lengths = length(role_texts, role) if length is not None else [len(t) for t in role_texts]
        for indices in length_sorted_batches(lengths, batch_size):
            positions = indices.tolist()
            batches.append((role, positions, [role_texts[i] for i in positions]))
    return batches[rank::world_size]


def encode(trainer: L.Trainer, module: DualEncoderModule, texts: Mapping[Role, list[str]], batch_size: int,
           precision: Precision, ckpt_path: str | None = None) -> dict[Role, np.ndarray] | None:
    """Embeddings of each role's ``texts`` (float32, rows in the texts' order) from
    ``trainer.predict``, every rank encoding its share; on global rank zero, ``None`` on the others."""
    tokenizer = module.encoder.text_tokenizer
    # Sorted by token count, each batch pads to little more than its texts (characters per
    # token vary several-fold between scripts: Thai or Hindi against English).
    batches = rank_batches(texts, batch_size, trainer.global_rank, trainer.world_size, tokenizer.lengths)
    # A generator of its own: iterating a DataLoader draws its workers' base seed from the
    # global torch generator otherwise, so a point that evaluated its initializer before
    # training would draw other dropout masks than one that reused that evaluation.
    loader = DataLoader(batches, batch_size=None, collate_fn=TextBatches(tokenizer), generator=torch.Generator())
    module.predict_precision = precision
    # One autocast region around the whole pass: autocast keeps the bf16 copy of each weight until
    # its outermost region ends, so the weights are cast once a pass instead of once a batch
    # (predict_step's own region, nested in this one, leaves the cache alone). It caches nothing
    # under inference mode, so the pass runs under no_grad. The same casts of the same weights:
    # the embeddings are unchanged.
    trainer.predict_loop.inference_mode = False
    with autocast_context(precision, trainer.strategy.root_device):
        outputs = trainer.predict(module, dataloaders=loader, ckpt_path=ckpt_path)
    local = [(batch[0], output["index"].numpy(), output["embedding"].numpy()) for batch, output in zip(batches, outputs)]
    if trainer.world_size > 1:
        gathered: list = [None] * trainer.world_size
        dist.all_gather_object(gathered, local)
        local = [item for part in gathered for item in part]
    if trainer.global_rank != 0:
        return None
    width = local[0][2].shape[1] if local else 0
    embeddings = {role: np.zeros((len(role_texts), width), dtype=np.float32) for role, role_texts in texts.items()}
    for role, positions, rows in local:
        embeddings[role][positions] = rows
    return embeddings


def encoding_trainer(accelerator: str = "auto") -> L.Trainer:
    """A Trainer that only encodes: one device, no logger, checkpoints, summary or progress bar."""
    return L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                     enable_model_summary=False, enable_progress_bar=False)


def embed(encoder: TextEncoder, texts: list[str], role: Role, batch_size: int = 256, precision: Precision = "fp32",
          trainer: L.Trainer | None = None) -> np.ndarray:
    """Embeddings of ``texts`` in ``role`` outside a run, by the path a run's evaluation takes
    (:func:`encode`); ``trainer`` defaults to an :func:`encoding_trainer`."""
    module = DualEncoderModule(encoder)
    return encode(trainer or encoding_trainer(), module, {role: texts}, batch_size, precision)[role]


class Evaluator:
    """The suites of ``eval.suites``, encoded through a Trainer and scored on global rank zero."""

    def __init__(self, suites: Mapping[str, EvalSuite], batch_size: int = 256, precision: Precision = "fp32",
                 checkpoint: str = "last"):
        if checkpoint not in ("best", "last"):
            raise ValueError(f"eval.checkpoint={checkpoint!r} is not allowed: expected 'best' or 'last'")
        self.suites, self.batch_size, self.precision, self.checkpoint = dict(suites), batch_size, precision, checkpoint

    def restricted_to(self, keys: list[str]) -> Evaluator:
        """The same evaluation on the suites ``keys`` only."""
        return Evaluator({key: self.suites[key] for key in keys}, self.batch_size, self.precision, self.checkpoint)

    def corpora(self) -> list:
        """The parallel QA corpora the suites evaluate on (for the zero-shot disjointness check)."""
        return [suite.corpus for suite in self.suites.values() if hasattr(suite, "corpus")]

    def _requests(self) -> tuple[dict[Role, list[str]], dict[str, dict[Role, slice]]]:
        texts: dict[Role, list[str]] = {}
        spans: dict[str, dict[Role, slice]] = {}
        for key, suite in self.suites.items():
            spans[key] = {}
            for role, role_texts in suite.texts().items():
                start = len(texts.setdefault(role, []))
                texts[role].extend(role_texts)
                spans[key][role] = slice(start, start + len(role_texts))
        return texts, spans

    def run(self, trainer: L.Trainer, module: DualEncoderModule, trained: bool) -> dict[str, SuiteResult] | None:
        """Encode and score every suite; the results on global rank zero, ``None`` on the others.

        ``trained``: after ``fit``, the weights named by ``eval.checkpoint`` are loaded first
        (``best``: the monitored checkpoint); before it, the model as built.
        """
        texts, spans = self._requests()
        ckpt_path = "best" if trained and self.checkpoint == "best" else None
        embeddings = encode(trainer, module, texts, self.batch_size, self.precision, ckpt_path)
        if embeddings is None:
            return None
        return {key: suite.score({role: embeddings[role][span] for role, span in spans[key].items()})
                for key, suite in self.suites.items()}


def log_results(tracker: RunTracker, suites: Mapping[str, EvalSuite], results: Mapping[str, SuiteResult] | None,
                prefix: str = "", step: int = 0) -> None:
    """Each suite's metrics under ``<prefix><suite prefix>`` and its tables in that folder."""
    if results is None:
        return
    for key, result in results.items():
        name = f"{prefix}{suites[key].prefix}"
        folder = name.rstrip("/") or None
        tracker.log_metrics(result.metrics, step=step, prefix=name)
        for matrix_name, matrix in result.matrices.items():
            figure = heatmap(matrix, f"{matrix_name} ({folder or 'trained'})")
            tracker.log_matrix(matrix, matrix_name, figure, folder)
            plt.close(figure)
        for file_name, table in result.tables.items():
            tracker.log_frame(table, file_name, folder)
