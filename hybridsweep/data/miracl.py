"""MIRACL (Zhang et al. 2023): monolingual passage retrieval in 18 languages, graded qrels.

Read through ``datasets`` from the hub repositories' files, or from a local copy in the same
layout (``root`` then names the folder that holds ``miracl/`` and ``miracl-corpus/``):

    miracl/miracl-v1.0-<lang>/topics/topics.miracl-v1.0-<lang>-<split>.tsv   qid <TAB> query
    miracl/miracl-v1.0-<lang>/qrels/qrels.miracl-v1.0-<lang>-<split>.tsv     qid Q0 docid relevance
    miracl-corpus/miracl-corpus-v1.0-<lang>/docs-*.jsonl.gz                  {"docid", "title", "text"}
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import datasets

from hybridsweep.data.download import DataUnavailableError

MIRACL_HUB_ROOT = "hf://datasets"


@dataclass
class MiraclLanguage:
    lang: str
    queries: dict[str, str]
    """qid -> query text (only queries that have judgements)."""
    passages: datasets.Dataset
    """Columns ``docid``, ``title``, ``text``."""
    qrels: dict[str, dict[str, int]]
    """qid -> docid -> graded relevance (0 = judged not relevant)."""


def _load(builder: str, data_files: str, what: str, **options) -> datasets.Dataset:
    try:
        return datasets.load_dataset(builder, data_files=data_files, split="train", **options)
    except FileNotFoundError as error:
        raise DataUnavailableError(
            f"MIRACL {what}: no files match {data_files} ({error}). Offline, put the MIRACL files in that "
            f"layout under a folder and pass it as root"
        ) from None
    except Exception as error:  # hub/network failures come in many types; say what was wanted
        raise DataUnavailableError(f"MIRACL {what}: cannot read {data_files}: {type(error).__name__}: {error}") from None


def load_miracl(lang: str, split: str = "dev", root: str = MIRACL_HUB_ROOT) -> MiraclLanguage:
    """Queries, qrels and passage corpus of one MIRACL language."""
    base = f"{root.rstrip('/')}/miracl/miracl-v1.0-{lang}"
    tsv = dict(delimiter="\t", quoting=3)  # queries hold quotes: read every field verbatim

    def columns(*names: str) -> dict:
        return dict(column_names=list(names), features=datasets.Features({n: datasets.Value("string") for n in names}))

    topics = _load("csv", f"{base}/topics/topics.miracl-v1.0-{lang}-{split}.tsv", "topics",
                   **columns("qid", "query"), **tsv)
    judgements = _load("csv", f"{base}/qrels/qrels.miracl-v1.0-{lang}-{split}.tsv", "qrels",
                       **columns("qid", "iteration", "docid", "relevance"), **tsv)
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for row in judgements:
        qrels[row["qid"]][row["docid"]] = int(row["relevance"])
    passages = _load("json", f"{root.rstrip('/')}/miracl-corpus/miracl-corpus-v1.0-{lang}/docs-*.jsonl.gz", "corpus")
    queries = {row["qid"]: row["query"] for row in topics if row["qid"] in qrels}
    return MiraclLanguage(lang, queries, passages, dict(qrels))
