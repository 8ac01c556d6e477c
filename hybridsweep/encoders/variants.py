"""CPU-sized variants of a pretrained backbone and the training switches every builder shares.

* **Layer truncation** keeps the first ``N`` transformer layers: the output is exactly the hidden
  state after layer ``N`` of the full model.
* **Vocabulary pruning** keeps the embedding rows of the pieces that occur in given texts. The
  tokenizer is left untouched, so segmentation is identical for every text; a lookup table maps
  each original id to its row in the pruned matrix (``new = old_to_new[old]``), and an id whose
  piece was pruned maps to the row of the unknown token. On the texts used for pruning the
  pruned model computes exactly what the full model computes.
* **Frozen word embeddings** take the (large) embedding matrix out of the optimiser.
* **Gradient checkpointing** goes through the backbone's own switch (``activation_checkpointing_enable``,
  called ``gradient_checkpointing_enable`` before transformers 5).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from hybridsweep.data.parallel_qa import ParallelQA, texts_digest
from hybridsweep.model import TextEncoder


class PrunedEmbedding(nn.Embedding):
    """An embedding over a subset of a vocabulary, indexed by the original ids.

    ``forward(ids) = weight[old_to_new[ids]]``; the table is a buffer, so it travels with the
    module's state dict and device.
    """

    def __init__(self, weight: torch.Tensor, old_to_new: torch.Tensor, padding_idx: int | None = None):
        super().__init__(weight.shape[0], weight.shape[1], padding_idx=padding_idx, _weight=weight.clone())
        self.register_buffer("old_to_new", old_to_new.long(), persistent=True)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return super().forward(self.old_to_new[input_ids])


def truncate_layers(backbone: PreTrainedModel, num_layers: int) -> None:
    """Keep the first ``num_layers`` transformer layers of an encoder (BERT/XLM-R layout)."""
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"model.num_layers: {type(backbone).__name__} has no encoder.layer list to truncate")
    if not 1 <= num_layers <= len(layers):
        raise ValueError(f"model.num_layers={num_layers} is not allowed: expected 1..{len(layers)}")
    backbone.encoder.layer = layers[:num_layers]
    backbone.config.num_hidden_layers = num_layers


def used_token_ids(
    tokenizer: PreTrainedTokenizerFast, texts: Iterable[str], prefixes: Sequence[str], cache_dir: str | Path | None = None,
) -> torch.Tensor:
    """Sorted ids of every piece in the tokenization of ``prefix + text``, plus all special ids.

    With ``cache_dir`` the ids are kept in ``cache_dir/vocabulary/<hash>.pt``, keyed by the
    tokenizer (its whole serialised definition), the prefixes and the texts: tokenizing every
    corpus text is otherwise most of a sweep point's set-up (about 10 s for MLQA-R + XQuAD-R with
    e5-small).
    """
    texts = list(texts)
    path = None
    if cache_dir is not None:
        # The serialised tokenizer (0.03 s for e5's) rather than its sorted vocabulary (0.8 s).
        digest = texts_digest(f"{tokenizer.backend_tokenizer.to_str()}|{list(prefixes)}|", texts)
        path = Path(cache_dir).expanduser() / "vocabulary" / f"{digest[:24]}.pt"
        if path.exists():
            return torch.load(path)
    seen = set(tokenizer.all_special_ids)
    for prefix in dict.fromkeys(prefixes):
        for ids in tokenizer([prefix + t for t in texts], add_special_tokens=True)["input_ids"]:
            seen.update(ids)
    ids = torch.tensor(sorted(seen), dtype=torch.long)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed, so a parallel point never reads a half-written file.
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(ids, partial)
        os.replace(partial, path)
    return ids


def prune_vocabulary(backbone: PreTrainedModel, keep_ids: torch.Tensor, unk_id: int) -> None:
    """Replace the word embeddings by a :class:`PrunedEmbedding` over ``keep_ids``."""
    embedding = backbone.get_input_embeddings()
    keep_ids = torch.unique(torch.cat([keep_ids, torch.tensor([unk_id])]))
    old_to_new = torch.full((embedding.num_embeddings,), -1, dtype=torch.long)
    old_to_new[keep_ids] = torch.arange(len(keep_ids))
    old_to_new[old_to_new < 0] = old_to_new[unk_id]
    padding = None if embedding.padding_idx is None else int(old_to_new[embedding.padding_idx])
    backbone.set_input_embeddings(PrunedEmbedding(embedding.weight.data[keep_ids], old_to_new, padding))


def build_encoder(
    backbone: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    name: str,
    corpus: ParallelQA | None,
    *,
    pooling: str,
    query_prefix: str,
    passage_prefix: str,
    max_length: int,
    num_layers: int | None = None,
    prune_vocabulary_to_corpora: bool = False,
    vocabulary_corpora: Sequence[ParallelQA | DictConfig | Any] = (),
    freeze_word_embeddings: bool = False,
    gradient_checkpointing: bool = False,
    head: nn.Module | None = None,
    cache_dir: str | Path | None = None,
) -> TextEncoder:
    """A :class:`TextEncoder` from a loaded backbone, with the requested variants applied.

    With ``prune_vocabulary_to_corpora`` the kept pieces are those of the training ``corpus`` and
    of ``vocabulary_corpora`` (typically the evaluation corpus), as the encoder will see them
    (with each role's prefix). A vocabulary corpus may be given as the config node that builds it;
    it is built only when pruning is on; the kept ids are cached under ``cache_dir``. The variants
    are recorded in the encoder's name.
    """
    parts = [name]
    if num_layers is not None:
        truncate_layers(backbone, num_layers)
        parts.append(f"L{num_layers}")
    if prune_vocabulary_to_corpora:
        corpora = [instantiate(c) if isinstance(c, DictConfig) else c for c in (corpus, *vocabulary_corpora)]
        corpora = [c for c in corpora if c is not None]
        if not corpora:
            raise ValueError("model.prune_vocabulary_to_corpora needs a corpus to take the pieces from")
        texts = [t for c in corpora for t in c.texts()]
        keep = used_token_ids(tokenizer, texts, (query_prefix, passage_prefix), cache_dir)
        prune_vocabulary(backbone, keep, tokenizer.unk_token_id)
        parts.append(f"vocab{backbone.get_input_embeddings().num_embeddings}")
    if freeze_word_embeddings:
        backbone.get_input_embeddings().weight.requires_grad_(False)
        parts.append("frozen-emb")
    if gradient_checkpointing:
        # Non-reentrant checkpointing also works when the inputs need no gradient (frozen embeddings).
        # transformers >= 5 names it activation checkpointing; older releases gradient checkpointing.
        if hasattr(backbone, "activation_checkpointing_enable"):
            backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return TextEncoder(
        backbone, tokenizer, name="-".join(parts), pooling=pooling, query_prefix=query_prefix,
        passage_prefix=passage_prefix, max_length=max_length, head=head,
    )
