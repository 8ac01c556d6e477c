"""The dual encoder: one shared tower for questions and passages, and its Lightning module."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from hybridsweep.distributed import gather_with_grad
from hybridsweep.gradcache import cached_contrastive_loss
from hybridsweep.losses import InfoNCELoss
from hybridsweep.precision import Precision, autocast_context

Role = Literal["query", "passage"]


@dataclass
class TextTokenizer:
    """Texts of one role to model inputs: the role's prefix, truncation, dynamic padding.

    It holds only the tokenizer and its settings, so data-loader workers that tokenise never
    receive (or pickle) the model. ``pad_to_multiple_of`` rounds every batch's padded length up,
    so that a compiled backbone sees few distinct shapes.
    """

    tokenizer: PreTrainedTokenizerBase
    prefixes: dict[str, str]
    max_length: int
    pad_to_multiple_of: int | None = None

    def lengths(self, texts: list[str], role: Role) -> list[int]:
        """Tokens of each text as :meth:`__call__` encodes it (prefix, specials, truncation)."""
        encoded = self.tokenizer([self.prefixes[role] + t for t in texts], truncation=True, max_length=self.max_length)
        return [len(ids) for ids in encoded["input_ids"]]

    def __call__(self, texts: list[str], role: Role) -> dict[str, torch.Tensor]:
        prefix = self.prefixes[role]
        return dict(self.tokenizer(
            [prefix + t for t in texts], padding=True, truncation=True, max_length=self.max_length,
            pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt",
        ))


class TextEncoder(nn.Module):
    """A transformer backbone, its tokenizer and a pooling rule: texts in, unit vectors out.

    ``pooling`` is ``mean`` (average of the last hidden states over non-padding tokens) or ``cls``
    (the first token's state). ``query_prefix``/``passage_prefix`` are prepended to the texts of
    each role (e5 uses ``"query: "``/``"passage: "``), so one tower serves both roles. An optional
    ``head`` maps the pooled vector before normalisation (LaBSE's ``tanh(W h + b)`` dense layer).
    ``pad_to_multiple_of``: see :class:`TextTokenizer`.
    """

    def __init__(
        self,
        backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        name: str,
        pooling: Literal["mean", "cls"] = "mean",
        query_prefix: str = "",
        passage_prefix: str = "",
        max_length: int = 128,
        normalize: bool = True,
        head: nn.Module | None = None,
        pad_to_multiple_of: int | None = None,
    ):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"model.pooling must be 'mean' or 'cls', got {pooling!r}")
        self.backbone, self.tokenizer, self.name = backbone, tokenizer, name
        self.pooling, self.max_length, self.normalize = pooling, max_length, normalize
        self.prefixes = {"query": query_prefix, "passage": passage_prefix}
        self.head = head if head is not None else nn.Identity()
        self.pad_to_multiple_of = pad_to_multiple_of

    @property
    def text_tokenizer(self) -> TextTokenizer:
        return TextTokenizer(self.tokenizer, dict(self.prefixes), self.max_length, self.pad_to_multiple_of)

    def tokenize(self, texts: list[str], role: Role) -> dict[str, torch.Tensor]:
        return self.text_tokenizer(texts, role)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        pooled = self.head(pooled)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled


def length_bucket_rows(lengths: torch.Tensor, buckets: int) -> list[torch.Tensor]:
    """Row indices of a batch in at most ``buckets`` groups of (nearly) equal size, in ascending
    order of ``lengths`` (token counts; ties keep their order)."""
    order = torch.argsort(lengths, stable=True)
    return list(torch.tensor_split(order, min(buckets, len(order))))


def encode_in_length_buckets(encoder: nn.Module, inputs: dict[str, torch.Tensor], buckets: int) -> torch.Tensor:
    """The embeddings of a batch's rows, in their order, from ``buckets`` encoder calls.

    The rows are grouped by token count (:func:`length_bucket_rows`) and each group is cut to its
    own longest row, so a call pads only to the longest text of its group rather than of the
    batch (MLQA-R answer sentences: 40 tokens on average; a batch of 100 padded to its longest
    holds about 3x the real tokens). Attention and mean pooling ignore padding, so each row's
    embedding is the one a single call gives; the graph is kept, so the loss and its gradients
    are those of one call. The inputs must be right-padded (every ``[rows, tokens]`` tensor is
    cut at the same width).
    """
    lengths = inputs["attention_mask"].sum(1)
    groups = length_bucket_rows(lengths, buckets)
    parts = []
    for rows in groups:
        width = int(lengths[rows].max())
        bucket = {key: value[rows, :width] for key, value in inputs.items()}
        if not torch.equal(bucket["attention_mask"].sum(1), lengths[rows]):
            raise ValueError("length_buckets needs right-padded inputs: a row has tokens after its padding")
        parts.append(encoder(**bucket))
    return torch.cat(parts)[torch.argsort(torch.cat(groups))]


def linear_warmup_decay(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float = 0.1) -> LambdaLR:
    """Learning-rate factor ``s / W`` for the first ``W = warmup_ratio * total_steps`` steps, then
    linear decay ``(T - s) / (T - W)`` to zero at step ``T = total_steps``."""
    if not 0 <= warmup_ratio < 1:
        raise ValueError(f"warmup_ratio={warmup_ratio} is not allowed: expected a number in [0, 1)")
    warmup = int(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return LambdaLR(optimizer, factor)


OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class DualEncoderModule(L.LightningModule):
    """Trains a :class:`TextEncoder` with an in-batch-negative contrastive loss, and encodes texts
    for evaluation (``predict_step``) on whatever device the Trainer placed it.

    ``optimizer`` and ``scheduler`` are factories (``_partial_`` config nodes):
    ``optimizer(param_groups)`` and ``scheduler(optimizer, total_steps=...)``; a module without an
    optimizer only encodes. Biases and norms
    (parameters with fewer than two dimensions) get no weight decay; where the optimizer has a
    fused kernel (one pass over all parameters) it is used unless a loss scaler is in play.
    Gradient clipping and precision are the Trainer's (``trainer.gradient_clip_val``,
    ``trainer.precision``).

    The batch a step receives is this rank's slice of the global contrastive batch; embeddings are
    gathered from all ranks (:func:`gather_with_grad`) before the loss. With ``mini_batch_size``
    set, the encoder sees that many rows at a time and gradients are cached
    (:mod:`hybridsweep.gradcache`); the gradients are those of the uncached loss. With
    ``length_buckets`` set instead, each role's texts are encoded in that many calls of similar
    length (:func:`encode_in_length_buckets`), in training and validation. Validation batches
    are built the same way as training ones, and ``val/loss`` is the loss over each global batch.
    """

    def __init__(
        self,
        encoder: TextEncoder,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        loss: nn.Module | None = None,
        mini_batch_size: int | None = None,
        length_buckets: int | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        self.loss = loss if loss is not None else InfoNCELoss()
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        if mini_batch_size is not None and length_buckets is not None:
            raise ValueError(f"mini_batch_size={mini_batch_size} and length_buckets={length_buckets}: set at most "
                             "one (gradient caching already splits the batch)")
        self.mini_batch_size, self.length_buckets = mini_batch_size, length_buckets
        self.predict_precision: Precision = "fp32"
        """Precision of ``predict_step`` (``eval.precision``), whatever the Trainer's."""

    def on_fit_start(self) -> None:
        # Dropout on, as fine-tuning has it: a backbone loaded with from_pretrained arrives in eval
        # mode, and Lightning keeps the train/eval mode it finds (its validation and prediction
        # loops restore it afterwards), so left alone every layer would train without dropout.
        self.train()

    def encode(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Embeddings of one role's rows of a batch, in one call or in ``length_buckets``."""
        if self.length_buckets is None:
            return self.encoder(**inputs)
        return encode_in_length_buckets(self.encoder, inputs, self.length_buckets)

    def global_loss(self, questions: torch.Tensor, passages: torch.Tensor) -> torch.Tensor:
        """The loss over the embeddings of every rank's slice of the batch."""
        return self.loss(gather_with_grad(questions), gather_with_grad(passages))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.mini_batch_size is None:
            rows = batch["query"]["input_ids"].shape[0]
            loss = self.global_loss(self.encode(batch["query"]), self.encode(batch["passage"]))
        else:
            loss, rows = cached_contrastive_loss(
                self.encoder, batch["query"], batch["passage"], self.global_loss, self.mini_batch_size
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=rows)
        self.log("train/mono_batch_share", float(batch["is_mono"]), batch_size=rows)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        rows = batch["query"]["input_ids"].shape[0]
        loss = self.global_loss(self.encode(batch["query"]), self.encode(batch["passage"]))
        # Every rank computes the same global loss; the all-reduce (of equal values) only tells
        # Lightning that the epoch value is global.
        self.log("val/loss", loss, prog_bar=True, batch_size=rows, sync_dist=True)
        self.log(f"val/loss_{'mono' if batch['is_mono'] else 'cross'}", loss, batch_size=rows, sync_dist=True)
        return loss

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        """Embeddings of one batch of texts (``batch["inputs"]``) in ``predict_precision``, with
        their positions (``batch["index"]``), both on the CPU."""
        with autocast_context(self.predict_precision, self.device):
            embedding = self.encoder(**batch["inputs"])
        return {"index": batch["index"].cpu(), "embedding": embedding.float().cpu()}

    def _loss_scaler(self):
        """The Trainer's gradient scaler (16-mixed), or None (32-true, bf16-mixed, no Trainer)."""
        trainer = self._trainer
        return getattr(trainer.precision_plugin, "scaler", None) if trainer is not None else None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Lightning's clipping, except that without a loss scaler the gradients are clipped here:
        Lightning's mixed-precision plugin refuses to clip for any fused optimizer, although under
        bf16-mixed there is nothing to unscale."""
        if not gradient_clip_val or self._loss_scaler() is not None:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(parameters, gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(parameters, gradient_clip_val)

    def configure_optimizers(self):
        optimizer, scheduler = self.optimizer_and_schedule(self.trainer.estimated_stepping_batches)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def optimizer_and_schedule(self, total_steps: int):
        """The optimizer over the trainable parameters and its per-step schedule over ``total_steps``."""
        if self.optimizer_factory is None:
            raise ValueError("this DualEncoderModule was built without an optimizer: it encodes, it cannot train")
        decay, no_decay = [], []
        for parameter in self.encoder.parameters():
            if parameter.requires_grad:
                (no_decay if parameter.ndim < 2 else decay).append(parameter)
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        options = {}
        # A fused kernel updates every parameter in one pass: on CPU about 5x faster than the
        # per-tensor loop, a quarter of an e5-small step. A loss scaler (16-mixed) must unscale
        # before clipping, which a fused optimizer does only inside its step: no fusing there.
        if "fused" in inspect.signature(self.optimizer_factory).parameters and self._loss_scaler() is None:
            options["fused"] = all(p.device.type in ("cpu", "cuda") for p in decay + no_decay) or None
        optimizer = self.optimizer_factory(groups, **options)
        scheduler = self.scheduler_factory(optimizer, total_steps=int(total_steps)) if self.scheduler_factory else None
        return optimizer, scheduler
