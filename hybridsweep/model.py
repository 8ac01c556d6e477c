"""The dual encoder: one shared tower for questions and passages, and its Lightning module."""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from hybridsweep.distributed import gather_with_grad
from hybridsweep.gradcache import cached_contrastive_loss
from hybridsweep.losses import InfoNCELoss

Role = Literal["query", "passage"]


class TextEncoder(nn.Module):
    """A transformer backbone, its tokenizer and a pooling rule: texts in, unit vectors out.

    ``pooling`` is ``mean`` (average of the last hidden states over non-padding tokens) or ``cls``
    (the first token's state). ``query_prefix``/``passage_prefix`` are prepended to the texts of
    each role (e5 uses ``"query: "``/``"passage: "``), so one tower serves both roles. An optional
    ``head`` maps the pooled vector before normalisation (LaBSE's ``tanh(W h + b)`` dense layer).
    ``pad_to_multiple_of`` rounds every batch's padded length up, so that a compiled backbone sees
    few distinct shapes.
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

    def tokenize(self, texts: list[str], role: Role) -> dict[str, torch.Tensor]:
        prefix = self.prefixes[role]
        return dict(self.tokenizer(
            [prefix + t for t in texts], padding=True, truncation=True,
            max_length=self.max_length, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt",
        ))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        pooled = self.head(pooled)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled


class DualEncoderModule(L.LightningModule):
    """Trains a :class:`TextEncoder` with an in-batch-negative contrastive loss.

    Optimiser: AdamW (no weight decay on biases and layer norms) with linear warm-up over
    ``warmup_ratio`` of the training steps, then linear decay to zero; its fused kernel (one pass
    over all parameters) wherever no loss scaler is in play. Gradient clipping and precision are
    the Trainer's (``trainer.gradient_clip_val``, ``trainer.precision``).

    The batch a step receives is this rank's slice of the global contrastive batch; embeddings are
    gathered from all ranks (:func:`gather_with_grad`) before the loss. With ``mini_batch_size``
    set, the encoder sees that many rows at a time and gradients are cached
    (:mod:`hybridsweep.gradcache`); the gradients are those of the uncached loss.
    """

    def __init__(
        self,
        encoder: TextEncoder,
        loss: nn.Module | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        mini_batch_size: int | None = None,
    ):
        super().__init__()
        self.mini_batch_size = mini_batch_size
        self.encoder = encoder
        self.loss = loss if loss is not None else InfoNCELoss()
        self.lr, self.weight_decay, self.warmup_ratio = lr, weight_decay, warmup_ratio

    def global_loss(self, questions: torch.Tensor, passages: torch.Tensor) -> torch.Tensor:
        """The loss over the embeddings of every rank's slice of the batch."""
        return self.loss(gather_with_grad(questions), gather_with_grad(passages))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.mini_batch_size is None:
            rows = batch["query"]["input_ids"].shape[0]
            loss = self.global_loss(self.encoder(**batch["query"]), self.encoder(**batch["passage"]))
        else:
            loss, rows = cached_contrastive_loss(
                self.encoder, batch["query"], batch["passage"], self.global_loss, self.mini_batch_size
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=rows)
        self.log("train/mono_batch_share", float(batch["is_mono"]), batch_size=rows)
        return loss

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
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def optimizer_and_schedule(self, total_steps: int):
        """The AdamW optimiser and its per-step warm-up/decay schedule over ``total_steps``."""
        decay, no_decay = [], []
        for name, parameter in self.encoder.named_parameters():
            if not parameter.requires_grad:
                continue
            (no_decay if parameter.ndim < 2 else decay).append(parameter)
        # The fused kernel updates every parameter in one pass: on CPU about 5x faster than the
        # per-tensor loop, a quarter of an e5-small step. A loss scaler (16-mixed) must unscale
        # before clipping, which a fused optimizer does only inside its step: no fusing there.
        fused = self._loss_scaler() is None and all(p.device.type in ("cpu", "cuda") for p in decay + no_decay)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr, fused=fused or None,
        )
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.warmup_ratio * total_steps), total_steps)
        return optimizer, scheduler
