"""MIRACL: the loader on small files written in the hub layout; nDCG@10 / Recall@100 against pytrec_eval."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import pytrec_eval

from hybridsweep.data.download import DataUnavailableError
from hybridsweep.data.miracl import load_miracl
from hybridsweep.data.synthetic import generate
from hybridsweep.encoders.tiny import tiny_bert
from hybridsweep.evaluation.evaluator import embed
from hybridsweep.evaluation.miracl import MiraclSuite, evaluate_rankings

TOPICS = {"1": 'Who wrote "Kinjeketile"?', "2": "What is the capital of Kenya?", "3": "How tall is Kilimanjaro?",
          "4": "Unjudged-only query"}
PASSAGES = [
    ("10#0", "Kinjeketile", "Kinjeketile is a play written by Ebrahim Hussein."),
    ("10#1", "Kinjeketile", "The play is about the Maji Maji rebellion."),
    ("11#0", "Nairobi", "Nairobi is the capital and largest city of Kenya."),
    ("11#1", "Nairobi", "The city lies on the Nairobi River."),
    ("12#0", "Kilimanjaro", "Kilimanjaro rises 5,895 metres above sea level."),
    ("12#1", "Kilimanjaro", "It is the highest mountain in Africa."),
    ("13#0", "Mombasa", "Mombasa is a coastal city of Kenya."),
]
# Graded: 2 = answers it, 1 = on topic, 0 = judged not relevant.
QRELS = [("1", "10#0", 2), ("1", "10#1", 1), ("1", "11#0", 0), ("2", "11#0", 2), ("2", "13#0", 1),
         ("2", "11#1", 1), ("3", "12#0", 2), ("3", "12#1", 1), ("4", "13#0", 0)]


@pytest.fixture
def miracl_root(tmp_path):
    topics = tmp_path / "miracl" / "miracl-v1.0-sw" / "topics" / "topics.miracl-v1.0-sw-dev.tsv"
    qrels = tmp_path / "miracl" / "miracl-v1.0-sw" / "qrels" / "qrels.miracl-v1.0-sw-dev.tsv"
    corpus = tmp_path / "miracl-corpus" / "miracl-corpus-v1.0-sw"
    for folder in (topics.parent, qrels.parent, corpus):
        folder.mkdir(parents=True)
    topics.write_text("".join(f"{q}\t{text}\n" for q, text in TOPICS.items()), encoding="utf-8")
    qrels.write_text("".join(f"{q}\tQ0\t{d}\t{r}\n" for q, d, r in QRELS))
    for part, rows in enumerate((PASSAGES[:4], PASSAGES[4:])):
        with gzip.open(corpus / f"docs-{part}.jsonl.gz", "wt", encoding="utf-8") as out:
            out.writelines(json.dumps({"docid": d, "title": t, "text": x}) + "\n" for d, t, x in rows)
    return tmp_path


def _pytrec(rankings_scores, qrels):
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut", "recall"})
    per_query = evaluator.evaluate(rankings_scores)
    return {"ndcg_at_10": np.mean([v["ndcg_cut_10"] for v in per_query.values()]),
            "recall_at_100": np.mean([v["recall_100"] for v in per_query.values()])}


def test_loader_reads_the_hub_layout(miracl_root):
    miracl = load_miracl("sw", root=str(miracl_root))
    assert miracl.queries == {q: t for q, t in TOPICS.items()}  # every topic here has judgements
    assert sorted(miracl.passages["docid"]) == sorted(d for d, _, _ in PASSAGES)
    assert miracl.qrels["1"] == {"10#0": 2, "10#1": 1, "11#0": 0}


def test_missing_files_give_a_clear_error(tmp_path):
    with pytest.raises(DataUnavailableError, match="MIRACL topics.*topics.miracl-v1.0-yo-dev.tsv"):
        load_miracl("yo", root=str(tmp_path))


def test_metrics_agree_with_pytrec_eval_on_graded_qrels():
    rng = np.random.default_rng(0)
    docs = [f"d{i}" for i in range(150)]
    qrels = {f"q{q}": {d: int(rng.integers(0, 3)) for d in rng.choice(docs, 12, replace=False)} for q in range(30)}
    scores = {q: {d: float(s) for d, s in zip(docs, rng.normal(size=len(docs)))} for q in qrels}
    rankings = {q: sorted(s, key=s.get, reverse=True) for q, s in scores.items()}
    ours = evaluate_rankings(rankings, qrels)
    # pytrec_eval averages over queries with a relevant document, like ours.
    answered = {q: r for q, r in qrels.items() if any(g > 0 for g in r.values())}
    reference = _pytrec({q: scores[q] for q in answered}, answered)
    for name, value in reference.items():
        assert ours[name] == pytest.approx(value, abs=1e-6)


def test_suite_end_to_end_agrees_with_pytrec_eval(miracl_root, tmp_path):
    encoder = tiny_bert(generate(5), cache_dir=str(tmp_path / "cache"), num_layers=1, hidden_size=32,
                        num_heads=2, intermediate_size=64, vocab_size=300)
    suite = MiraclSuite(["sw"], root=str(miracl_root))
    result = suite.score({role: embed(encoder, texts, role, 4) for role, texts in suite.texts().items()})
    query_emb = embed(encoder, list(TOPICS.values()), "query")
    passage_emb = embed(encoder, [f"{t} {x}" for _, t, x in PASSAGES], "passage")
    qrels = {q: {d: r for qq, d, r in QRELS if qq == q} for q in ("1", "2", "3")}
    run = {q: {d: float(s) for (d, _, _), s in zip(PASSAGES, passage_emb @ query_emb[i])}
           for i, q in enumerate(TOPICS) if q in qrels}
    reference = _pytrec(run, qrels)
    assert result.metrics["ndcg_at_10/sw"] == pytest.approx(reference["ndcg_at_10"], abs=1e-6)
    assert result.metrics["recall_at_100/sw"] == pytest.approx(1.0)  # 7 passages: all retrieved
    assert result.matrices["scores"].loc["sw", "ndcg_at_10"] == result.metrics["ndcg_at_10/sw"]
