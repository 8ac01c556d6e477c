"""A whole zero-shot evaluation (encode + every metric), as it ran before and as it runs now.

Interleaved per round on the same corpus and encoder:

* ``before``: fp32, batches sorted by characters (:func:`common.encode_char_sorted`), the metrics
  of :func:`evaluate_embeddings`, plus the exact faiss top-k search over the multilingual pool
  that evaluation ran as a second pass before the top k came from the ranking pass's scores;
* ``now``: :func:`~hybridsweep.evaluation.evaluator.embed` and the LAReQA scoring at ``eval.precision`` (default ``auto``: bf16 on CPUs with
  native bf16), batches sorted by token count.

Printed and written: seconds of each, the ratio now/before, the share of ``now`` spent outside
the encoder (metrics), and the mAP of both. With ``--question-ids N`` an evenly spaced subset of
N question ids is evaluated (its questions and their answer sentences); the full-corpus time of
each side is then extrapolated by text count. ``--naive`` also ranks the multilingual pool by a
full argsort of every score row (the oracle of the multilingual mAP) and times it.

    OMP_NUM_THREADS=1 HYBRIDSWEEP_DATA=../shared/data python benchmarks/bench_eval.py --model e5_small eval=xquad_r --question-ids 100
"""

from __future__ import annotations

import statistics
import time

import faiss
import numpy as np
from common import build_corpora_and_encoder, encode_char_sorted, interleave, load_config, machine, parser, write_results

from hybridsweep.evaluation.evaluator import embed, encoding_trainer
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
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--question-ids", type=int, default=0, help="an evenly spaced subset of N question ids (0: all)")
    args.add_argument("--naive", action="store_true", help="also time the full-sort multilingual mAP")
    args.add_argument("--sides", default="before,now", help="which of before, now to run (comma-separated)")
    args.set_defaults(rounds=1)
    args = args.parse_args()
    trainer = encoding_trainer("cpu")  # the pipeline's encoding path (trainer.predict), one Trainer for every pass
    cfg = load_config(args.model, args.overrides)
    _, full, encoder = build_corpora_and_encoder(cfg)
    corpus = full
    if args.question_ids:
        ids = full.question_ids
        corpus = full.select_ids(set(ids[:: max(1, len(ids) // args.question_ids)][: args.question_ids]))
    questions = [q.text for q in corpus.questions]
    candidates = [c.text for c in corpus.candidates]
    n_texts, n_full = len(questions) + len(candidates), len(full.questions) + len(full.candidates)
    batch, top_k, precision = cfg.eval.batch_size, cfg.eval.top_k, cfg.eval.precision
    print(f"machine: {machine()}")
    print(f"model: {encoder.name} ({args.model}); {len(questions)} questions + {len(candidates)} candidates "
          f"of {full.name} ({n_full} texts in all); batch {batch}; now: eval.precision={precision}", flush=True)
    seconds: dict[str, list[float]] = {"before": [], "now": [], "now encode": []}
    results = {}

    def before() -> float:
        start = time.perf_counter()
        q = encode_char_sorted(encoder, questions, "query", batch, "fp32")
        c = encode_char_sorted(encoder, candidates, "passage", batch, "fp32")
        results["before"] = evaluate_embeddings(corpus, q, c, top_k)
        index = faiss.IndexFlatIP(c.shape[1])
        index.add(c)
        index.search(q, top_k)
        seconds["before"].append(time.perf_counter() - start)
        return 1 / seconds["before"][-1]

    def now() -> float:
        start = time.perf_counter()
        q = embed(encoder, questions, "query", batch, precision=precision, trainer=trainer)
        c = embed(encoder, candidates, "passage", batch, precision=precision, trainer=trainer)
        encoded = time.perf_counter()
        results["now"] = evaluate_embeddings(corpus, q, c, top_k)
        results["embeddings"] = (q, c)
        seconds["now"].append(time.perf_counter() - start)
        seconds["now encode"].append(encoded - start)
        return 1 / seconds["now"][-1]

    sides = args.sides.split(",")
    rates = interleave({side: {"before": before, "now": now}[side] for side in sides}, args.rounds)
    figures = {"model": args.model, "encoder": encoder.name, "corpus": full.name, "texts": n_texts,
               "texts_full_corpus": n_full, "precision_now": precision, "rounds": args.rounds,
               "seconds": {side: seconds[side] for side in (*sides, "now encode") if seconds[side]}}
    if len(sides) == 2:
        figures["now_over_before_time"] = statistics.median(b / n for b, n in zip(rates["before"], rates["now"]))
    if "now" in sides:
        figures["now_share_outside_encoder"] = statistics.median(
            1 - e / t for e, t in zip(seconds["now encode"], seconds["now"]))
    if args.question_ids:
        scale = n_full / n_texts
        figures["extrapolated_full_s"] = {side: statistics.median(seconds[side]) * scale for side in sides}
    for key in ("map_full/monolingual", "map_full/crosslingual", "map_full/multilingual"):
        for side in sides:
            figures[f"{key} {side}"] = results[side].metrics[key]
    if args.naive and "now" in sides:
        start = time.perf_counter()
        figures["naive_multilingual_map"] = naive_multilingual_map(corpus, *results["embeddings"])
        figures["naive_full_sort_s"] = time.perf_counter() - start
    for key, value in figures.items():
        print(f"{key}: {value}")
    write_results(f"eval_{args.model}_{full.name}" + (f"_{args.question_ids}ids" if args.question_ids else "")
                  + ("" if len(sides) == 2 else f"_{sides[0]}"), figures)


if __name__ == "__main__":
    main()
