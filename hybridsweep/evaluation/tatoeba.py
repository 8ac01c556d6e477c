"""Tatoeba sentence retrieval (XTREME): top-1 accuracy of finding a sentence's translation.

For language X with aligned sentences (x_i, e_i), i = 1..n, and cosine similarity s:

    acc(X -> en) = 1/n * sum_i [ argmax_j s(x_i, e_j) = i ],   acc(en -> X) likewise from e_i.

Exact search (:mod:`hybridsweep.evaluation.search`); both sides are encoded as queries (a symmetric task).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from hybridsweep.data.tatoeba import Bitext, load_tatoeba
from hybridsweep.evaluation.search import nearest
from hybridsweep.evaluation.suites import SuiteResult


def top1_accuracy(query_emb: np.ndarray, target_emb: np.ndarray) -> float:
    """Share of rows i whose nearest target (inner product) is target row i."""
    return float((nearest(query_emb, target_emb, 1)[:, 0] == np.arange(len(query_emb))).mean())


class TatoebaSuite:
    """Tatoeba as an evaluation suite: per-language accuracy both ways and their means."""

    def __init__(self, languages: list[str] | None = None, root: str | None = None,
                 download_dir: str | os.PathLike = "~/.cache/hybridsweep/downloads", prefix: str = "tatoeba/"):
        self.bitexts: list[Bitext] = load_tatoeba(languages, root, download_dir)
        self.prefix = prefix

    def texts(self) -> dict[str, list[str]]:
        """Both sides of every bitext, as queries (a symmetric task): each language's sentences,
        then their English translations, language after language."""
        return {"query": [t for b in self.bitexts for t in (*b.sentences, *b.english)]}

    def score(self, embeddings: dict[str, np.ndarray]) -> SuiteResult:
        table = pd.DataFrame(columns=pd.Index(["xx->en", "en->xx"], name="direction"),
                             index=pd.Index([b.lang for b in self.bitexts], name="language"), dtype=float)
        start = 0
        for bitext in self.bitexts:
            n = len(bitext.sentences)
            source, english = embeddings["query"][start:start + n], embeddings["query"][start + n:start + 2 * n]
            start += 2 * n
            table.loc[bitext.lang] = [top1_accuracy(source, english), top1_accuracy(english, source)]
        metrics = {f"accuracy/{lang}-en": row["xx->en"] for lang, row in table.iterrows()}
        metrics |= {f"accuracy/en-{lang}": row["en->xx"] for lang, row in table.iterrows()}
        metrics["accuracy/xx-en"] = float(table["xx->en"].mean())
        metrics["accuracy/en-xx"] = float(table["en->xx"].mean())
        metrics["accuracy/mean"] = float(table.to_numpy().mean())
        return SuiteResult(metrics, {"accuracy": table.T})
