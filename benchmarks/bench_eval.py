"""Evaluation speed on the full XQuAD-R multilingual pool: how much time is spent outside the encoder.

    python benchmarks/bench_eval.py [--data ../shared/data]

Times one full evaluation (encode questions and candidates once, then every setting: 121
language pairs, the multilingual pool, top-k search, bias) with the embedded tiny encoder, and
prints the share of wall time spent outside the encoder (target: under 10%). As a baseline from
the same run it also ranks the multilingual pool the naive way (a full argsort of every row) and
prints how much slower that alone is than all of the metric computation.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from hybridsweep.data.lareqa import load_lareqa
from hybridsweep.encoders.tiny import tiny_bert
from hybridsweep.evaluation.encode import encode_texts
from hybridsweep.evaluation.metrics import average_precision
from hybridsweep.evaluation.retrieval import evaluate_embeddings


def naive_multilingual_map(corpus, question_emb, candidate_emb) -> float:
    """mAP of the multilingual pool by sorting every query's full score row (the baseline)."""
    relevant_ids = [set(c.answer_ids) for c in corpus.candidates]
    aps = []
    for start in range(0, len(question_emb), 256):
        order = np.argsort(-(question_emb[start : start + 256] @ candidate_emb.T), axis=1, kind="stable")
        for offset, row in enumerate(order):
            qid = corpus.questions[start + offset].id
            ranks = np.array([r + 1 for r, c in enumerate(row) if qid in relevant_ids[c]])
            if len(ranks):
                aps.append(average_precision(ranks))
    return float(np.mean(aps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    train = load_lareqa("mlqa-r", root=args.data)
    corpus = load_lareqa("xquad-r", root=args.data)
    with tempfile.TemporaryDirectory() as cache:
        encoder = tiny_bert(train, cache_dir=cache)  # the embedded default, tokenizer from MLQA-R
    start = time.perf_counter()
    question_emb = encode_texts(encoder, [q.text for q in corpus.questions], "query", args.batch_size)
    candidate_emb = encode_texts(encoder, [c.text for c in corpus.candidates], "passage", args.batch_size)
    encoded = time.perf_counter()
    result = evaluate_embeddings(corpus, question_emb, candidate_emb)
    done = time.perf_counter()
    naive_map = naive_multilingual_map(corpus, question_emb, candidate_emb)
    naive = time.perf_counter() - done

    encode_s, metric_s = encoded - start, done - encoded
    print(f"pool: {len(corpus.questions)} questions x {len(corpus.candidates)} candidates, {len(corpus.languages)} languages")
    print(f"encoder:            {encode_s:8.2f} s")
    print(f"outside encoder:    {metric_s:8.2f} s  (121 pairs + multilingual + top-k + bias)")
    print(f"share outside encoder: {metric_s / (encode_s + metric_s):.2%}  (target < 10%)")
    print(f"baseline full-sort multilingual mAP alone: {naive:8.2f} s = {naive / metric_s:.1f}x all metrics "
          f"(mAP {naive_map:.6f} vs {result.metrics['map_full/multilingual']:.6f})")


if __name__ == "__main__":
    main()
