"""The embedded default encoder: a small BERT built from a config, with a tokenizer trained here.

Nothing is downloaded. The BPE subword tokenizer is trained by the ``tokenizers`` library on the
training corpus and saved with ``save_pretrained`` under ``cache_dir``, keyed by a hash of the
corpus and the tokenizer settings, so later runs (every point of a sweep) load it instead of
training it again. The backbone is randomly initialised from ``seed``, hence identical across runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from filelock import FileLock
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from hybridsweep.data.parallel_qa import ParallelQA, texts_digest
from hybridsweep.model import TextEncoder

_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _train_subwords(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A BPE subword vocabulary of ``texts`` behind BERT's normalizer and pre-tokenizer.

    BPE rather than WordPiece because the WordPiece trainer numbers its ``##`` pieces in hash-map
    order, which changes from process to process and, through tie-breaking, changes the vocabulary
    itself (huggingface/tokenizers#1794); BPE without a subword prefix trains the same vocabulary
    every time, so a fresh cache reproduces a run.
    """
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    # Han characters are split one by one, as multilingual BERT does; accents are kept (Greek).
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=False, handle_chinese_chars=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=_SPECIALS))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )


def cached_tokenizer(corpus: ParallelQA, vocab_size: int, cache_dir: str | os.PathLike) -> PreTrainedTokenizerFast:
    """The subword tokenizer of ``corpus``, trained once and then loaded from ``cache_dir``."""
    texts = corpus.texts()
    digest = texts_digest(f"bpe-v1|{vocab_size}|", texts)
    path = Path(cache_dir).expanduser() / "tokenizers" / f"{corpus.name}-{digest[:16]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Parallel sweep jobs may reach this together: one trains, the others wait and load.
    with FileLock(str(path) + ".lock"):
        if not (path / "tokenizer.json").exists():
            _train_subwords(texts, vocab_size).save_pretrained(path)
    return PreTrainedTokenizerFast.from_pretrained(path)


def tiny_bert(
    corpus: ParallelQA,
    cache_dir: str,
    vocab_size: int = 4000,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 512,
    max_length: int = 48,
    pooling: str = "mean",
    seed: int = 0,
    dropout: float = 0.1,
) -> TextEncoder:
    """A randomly initialised small BERT and its corpus-trained tokenizer, as a TextEncoder."""
    tokenizer = cached_tokenizer(corpus, vocab_size, cache_dir)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, intermediate_size=intermediate_size,
        max_position_embeddings=max(max_length, 64), pad_token_id=tokenizer.pad_token_id,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        backbone = BertModel(config, add_pooling_layer=False)
    name = f"tiny-bert-L{num_layers}-H{hidden_size}"
    return TextEncoder(backbone, tokenizer, name=name, pooling=pooling, max_length=max_length)
