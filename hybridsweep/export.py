"""The trained encoder as an artifact: a sentence-transformers folder, logged to MLflow as a model.

**The folder.** :func:`save_sentence_transformer` writes the classic sentence-transformers layout
that ``SentenceTransformer(folder)`` loads (tested with release 6.2; its files use no key newer than
release 3): the backbone and tokenizer at the top (``save_pretrained``), then one sub-folder per
module of the pipeline

    Transformer -> Pooling (mean over non-padding tokens, or the first token)
                -> Dense (only where the encoder has a head: ``activation(W h + b)``, LaBSE's)
                -> Normalize (only where the encoder L2-normalises)

and the role prefixes as prompts, ``{"query": q, "passage": p, "document": p}`` with no default
prompt: ``encode(texts, prompt_name="query")`` computes ``prefix + text`` exactly as the pipeline
does, and sentence-transformers' own ``encode_query``/``encode_document`` pick the same prompts
(``document`` is there because sentence-transformers >= 5 looks it up before ``passage``).
Prompt tokens are kept in the mean (``include_prompt``), as the pipeline pools them.

The variants of :mod:`hybridsweep.encoders.variants` export as ordinary models. A truncated
model saves its kept layers (its config already says how many). A pruned vocabulary is expanded
back to the tokenizer's full vocabulary: row ``i`` of the saved matrix is
``pruned.weight[old_to_new[i]]``, the very row the pruned model looks up for id ``i`` (a pruned
piece's id maps to the unknown token's row), so every id the tokenizer can emit gives the same
vector as in training.

**The MLflow model.** :func:`log_model` logs that folder as an MLflow 3 *logged model* (model type
``sentence-transformers``, source run = the training point's run, listed among the run's
outputs): ``mlflow.search_logged_models()`` finds it, and the model's artifacts *are* the folder.
It is logged as plain artifacts rather than through ``mlflow.sentence_transformers``: that flavour
works offline too, but needs sentence-transformers installed in every training environment, saves
the weights a second time through whatever sentence-transformers release is installed (the
release-6 layout does not load in earlier releases), and costs 2 s per point with the pip
requirements given, 16 s when it infers them (tiny model). Loading a logged model::

    SentenceTransformer(mlflow.artifacts.download_artifacts("models:/<model id>"))

or, by run, ``python -m hybridsweep.export RUN_ID DIR`` (:func:`main`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import mlflow
import torch
import transformers
from mlflow.entities import LoggedModel, LoggedModelStatus
from mlflow.exceptions import MlflowException
from safetensors.torch import save_file
from torch import nn

from hybridsweep.encoders.variants import PrunedEmbedding
from hybridsweep.model import TextEncoder
from hybridsweep.schema import TrackingConfig
from hybridsweep.tracking.store import client, tracking_uri
from hybridsweep.tracking.tracker import RunTracker

MODEL_TYPE = "sentence-transformers"
"""The ``model_type`` of every logged encoder (a filter for ``search_logged_models``)."""

# Module type names of the sentence-transformers layout that every release since 2 resolves.
_MODULE_TYPES = {
    "Transformer": "sentence_transformers.models.Transformer",
    "Pooling": "sentence_transformers.models.Pooling",
    "Dense": "sentence_transformers.models.Dense",
    "Normalize": "sentence_transformers.models.Normalize",
}
_POOLING_MODES = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")
_POOLING_OF = {"mean": "mean_tokens", "cls": "cls_token"}


def _backbone(encoder: TextEncoder) -> nn.Module:
    # torch.compile wraps the module it compiles; the weights and save_pretrained are the original's.
    return getattr(encoder.backbone, "_orig_mod", encoder.backbone)


def full_vocabulary_state(backbone: nn.Module) -> dict[str, torch.Tensor] | None:
    """The backbone's state dict with a :class:`PrunedEmbedding` expanded to the full vocabulary
    (``weight_full[i] = weight[old_to_new[i]]``, and no ``old_to_new`` table), or None when the
    word embeddings are not pruned."""
    embedding = backbone.get_input_embeddings()
    if not isinstance(embedding, PrunedEmbedding):
        return None
    prefix = next(name for name, module in backbone.named_modules() if module is embedding)
    vocab_size = backbone.config.vocab_size
    if embedding.old_to_new.numel() != vocab_size:
        raise ValueError(
            f"the pruned embedding maps {embedding.old_to_new.numel()} ids, but the backbone's config has "
            f"vocab_size={vocab_size}: cannot expand it back to the full vocabulary"
        )
    state = backbone.state_dict()
    del state[f"{prefix}.old_to_new"]
    state[f"{prefix}.weight"] = embedding.weight.detach()[embedding.old_to_new].contiguous()
    return state


def _dense_layer(head: nn.Module) -> tuple[nn.Linear, nn.Module] | None:
    """The ``(linear, activation)`` of a Dense-like head, None for no head (``nn.Identity``)."""
    if isinstance(head, nn.Identity):
        return None
    if isinstance(head, nn.Linear):
        return head, nn.Identity()
    if isinstance(head, nn.Sequential) and len(head) == 2 and isinstance(head[0], nn.Linear) and not list(head[1].parameters()):
        return head[0], head[1]
    raise ValueError(
        f"encoder.head is {' '.join(repr(head).split())}: only nn.Identity, nn.Linear or nn.Sequential(nn.Linear, <parameter-free "
        f"activation>) can be exported as a sentence-transformers Dense module"
    )


def _write_json(path: Path, content: dict | list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")


def save_sentence_transformer(encoder: TextEncoder, directory: str | Path) -> Path:
    """Write ``encoder`` as a sentence-transformers folder at ``directory`` (created; files in it are
    overwritten) and return its path. See the module docstring for the layout."""
    if encoder.pooling not in _POOLING_OF:
        raise ValueError(f"encoder.pooling={encoder.pooling!r} cannot be exported: expected one of {sorted(_POOLING_OF)}")
    dense = _dense_layer(encoder.head)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    backbone = _backbone(encoder)
    backbone.save_pretrained(directory, state_dict=full_vocabulary_state(backbone))
    encoder.tokenizer.save_pretrained(directory)
    _write_json(directory / "sentence_bert_config.json", {"max_seq_length": encoder.max_length, "do_lower_case": False})
    passage = encoder.prefixes["passage"]
    _write_json(directory / "config_sentence_transformers.json", {
        "__version__": {"transformers": transformers.__version__, "pytorch": torch.__version__},
        "prompts": {"query": encoder.prefixes["query"], "passage": passage, "document": passage},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine" if encoder.normalize else "dot",
    })

    kinds = ["Transformer", "Pooling"] + (["Dense"] if dense else []) + (["Normalize"] if encoder.normalize else [])
    # The Transformer's files are the folder's top level; each further module has its own folder.
    folders = {kind: f"{index}_{kind}" for index, kind in enumerate(kinds) if index > 0}
    _write_json(directory / "modules.json", [
        {"idx": index, "name": str(index), "path": folders.get(kind, ""), "type": _MODULE_TYPES[kind]}
        for index, kind in enumerate(kinds)
    ])
    _write_json(directory / folders["Pooling"] / "config.json", {
        "word_embedding_dimension": backbone.config.hidden_size,
        **{f"pooling_mode_{mode}": mode == _POOLING_OF[encoder.pooling] for mode in _POOLING_MODES},
        "include_prompt": True,
    })
    if dense:
        linear, activation = dense
        _write_json(directory / folders["Dense"] / "config.json", {
            "in_features": linear.in_features, "out_features": linear.out_features, "bias": linear.bias is not None,
            "activation_function": f"{type(activation).__module__}.{type(activation).__qualname__}",
        })
        weights = {f"linear.{name}": tensor.detach().contiguous() for name, tensor in linear.state_dict().items()}
        save_file(weights, str(directory / folders["Dense"] / "model.safetensors"))
    if encoder.normalize:
        (directory / folders["Normalize"]).mkdir(exist_ok=True)
    return directory


def log_model(tracker: RunTracker, encoder: TextEncoder, name: str = "encoder", step: int = 0) -> LoggedModel | None:
    """Log ``encoder`` as a sentence-transformers folder to a logged model of the tracker's run
    (see :meth:`hybridsweep.tracking.tracker.RunTracker.log_model`); its params describe the encoder
    (``encoder``, ``pooling``, ``max_length``, ``normalize``, the two prefixes). Returns the
    finalised model (``model.model_uri`` = ``models:/<id>``), or None where the tracker has no run."""
    if not tracker.active:
        return None
    params = {
        "encoder": encoder.name, "pooling": encoder.pooling, "max_length": str(encoder.max_length),
        "normalize": str(encoder.normalize), "query_prefix": encoder.prefixes["query"],
        "passage_prefix": encoder.prefixes["passage"],
    }
    with tempfile.TemporaryDirectory(prefix="hybridsweep-model-") as folder:
        save_sentence_transformer(encoder, folder)
        return tracker.log_model(folder, name, MODEL_TYPE, params, step)


def logged_model(uri: str, run_id: str, model_type: str) -> LoggedModel:
    """The newest READY logged model of ``model_type`` from run ``run_id``; a ``LookupError``
    naming the run when it has none."""
    store = client(uri)
    try:
        run = store.get_run(run_id)
    except MlflowException as error:
        raise LookupError(f"no run {run_id!r} in the tracking store {uri}") from error
    models = store.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
    ready = [m for m in models if m.status == LoggedModelStatus.READY and m.model_type == model_type]
    if not ready:
        raise LookupError(
            f"run {run_id} ({run.info.run_name}) has no logged {model_type} model: it was trained with "
            f"tracking.log_model=false, or before models were logged, or it did not finish"
        )
    return max(ready, key=lambda m: m.creation_timestamp)


def export_run_model(run_id: str, directory: str | Path, uri: str | None = None) -> Path:
    """Download the model logged from run ``run_id`` into ``directory`` (which must not exist or
    be empty) as a sentence-transformers folder, and return its path. ``uri`` defaults to the
    usual rule: ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the working directory."""
    uri = uri or tracking_uri(TrackingConfig().tracking_uri)
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise FileExistsError(f"{directory} exists and is not an empty folder: pick a new folder to export into")
    model = logged_model(uri, run_id, MODEL_TYPE)
    directory.mkdir(parents=True, exist_ok=True)
    mlflow.artifacts.download_artifacts(artifact_uri=model.model_uri, dst_path=str(directory), tracking_uri=uri)
    return directory


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m hybridsweep.export RUN_ID DIR``: a training run's model as a sentence-transformers folder."""
    parser = argparse.ArgumentParser(
        prog="hybridsweep-export", description="Write the encoder a training run logged to MLflow into a "
        "sentence-transformers folder: SentenceTransformer(DIR) loads it.",
    )
    parser.add_argument("run_id", metavar="RUN_ID", help="the MLflow run of a training point")
    parser.add_argument("directory", metavar="DIR", type=Path, help="a new (or empty) folder to write the model into")
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    args = parser.parse_args(argv)
    try:
        directory = export_run_model(args.run_id, args.directory, args.tracking_uri)
    except (LookupError, FileExistsError) as error:
        parser.exit(1, f"hybridsweep-export: {error}\n")
    print(f"wrote {directory}: SentenceTransformer({str(directory)!r}) loads it")


if __name__ == "__main__":
    main()
