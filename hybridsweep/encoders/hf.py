"""Any Hugging Face encoder (hub id or local folder) as a TextEncoder.

``AutoModel`` / ``AutoTokenizer`` load ``name_or_path``; pooling and prefixes come from the
config. For a sentence-transformers folder whose pipeline contains a ``Dense`` module (LaBSE:
CLS pooling, then ``tanh(W h + b)``, then L2 normalisation), ``dense_head: true`` loads that layer
from the folder's ``modules.json`` layout and applies it after pooling, as its authors do.
Offline with an id that is not in the local cache, loading fails with an error that names the id
and the local-folder alternative.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer

from hybridsweep.data.parallel_qa import ParallelQA
from hybridsweep.encoders.variants import build_encoder
from hybridsweep.model import TextEncoder

_DENSE_TYPE = "sentence_transformers.models.Dense"
_ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": nn.Tanh,
    "torch.nn.modules.linear.Identity": nn.Identity,
    "torch.nn.modules.activation.ReLU": nn.ReLU,
}


def _unreachable(name_or_path: str, error: Exception) -> OSError:
    return OSError(
        f"cannot load model.name_or_path={name_or_path!r}: it is not a local folder, and the Hugging "
        f"Face Hub has no cached copy of it here or cannot be reached ({type(error).__name__}). Download "
        f"it on a machine with internet (e.g. `hf download {name_or_path} --local-dir DIR`) and pass "
        f"the folder instead: model.name_or_path=/path/to/DIR"
    )


def _fetch(name_or_path: str, filename: str) -> Path:
    """A file of a local folder, or of a hub repository (downloaded into the hub cache)."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        path = local / filename
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (expected in a sentence-transformers folder)")
        return path
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(name_or_path, filename))
    except Exception as error:  # offline, gated, or missing: all mean "get a local copy"
        raise _unreachable(name_or_path, error) from error


def sentence_transformers_dense(name_or_path: str) -> nn.Module:
    """The ``Dense`` module of a sentence-transformers pipeline: ``activation(W h + b)``."""
    modules = json.loads(_fetch(name_or_path, "modules.json").read_text())
    dense = [m for m in modules if m.get("type") == _DENSE_TYPE]
    if len(dense) != 1:
        raise ValueError(f"{name_or_path}/modules.json has {len(dense)} {_DENSE_TYPE} modules, expected 1 (model.dense_head)")
    folder = dense[0]["path"]
    config = json.loads(_fetch(name_or_path, f"{folder}/config.json").read_text())
    activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{name_or_path}/{folder}/config.json: activation {activation!r} is not one of {sorted(_ACTIVATIONS)}")
    linear = nn.Linear(config["in_features"], config["out_features"], bias=config.get("bias", True))
    try:
        from safetensors.torch import load_file

        state = load_file(_fetch(name_or_path, f"{folder}/model.safetensors"))
    except (FileNotFoundError, OSError):
        state = torch.load(_fetch(name_or_path, f"{folder}/pytorch_model.bin"), map_location="cpu", weights_only=True)
    linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
    return nn.Sequential(linear, _ACTIVATIONS[activation]())


def hf_encoder(
    corpus: ParallelQA | None,
    cache_dir: str,
    name_or_path: str,
    pooling: str = "mean",
    query_prefix: str = "",
    passage_prefix: str = "",
    max_length: int = 128,
    dense_head: bool = False,
    num_layers: int | None = None,
    prune_vocabulary_to_corpora: bool = False,
    vocabulary_corpora: list[ParallelQA] = (),
    freeze_word_embeddings: bool = False,
    gradient_checkpointing: bool = False,
) -> TextEncoder:
    """A hub or local encoder as a TextEncoder (``cache_dir`` keeps pruned-vocabulary ids; the hub keeps its own model cache)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        backbone = AutoModel.from_pretrained(name_or_path)
    except OSError as error:
        if Path(name_or_path).expanduser().is_dir():
            raise
        raise _unreachable(name_or_path, error) from error
    head = sentence_transformers_dense(name_or_path) if dense_head else None
    return build_encoder(
        backbone, tokenizer, name_or_path.rstrip("/").split("/")[-1], corpus, pooling=pooling,
        query_prefix=query_prefix, passage_prefix=passage_prefix, max_length=max_length,
        num_layers=num_layers, prune_vocabulary_to_corpora=prune_vocabulary_to_corpora,
        vocabulary_corpora=vocabulary_corpora, freeze_word_embeddings=freeze_word_embeddings,
        gradient_checkpointing=gradient_checkpointing, head=head, cache_dir=cache_dir,
    )
