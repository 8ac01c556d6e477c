"""torch.compile of the backbone: encoding and training speed against eager, compile time, recompilations.

For each precision of ``--precisions`` (``fp32``; ``bf16``: autocast to bfloat16), interleaved per
round, in one process:

* **encoding**: the first ``--texts`` evaluation questions and candidates through
  :func:`~hybridsweep.evaluation.evaluator.embed` (a run's path: ``trainer.predict`` over
  token-sorted batches of ``eval.batch_size``), texts/s;
* **training**: ``--steps`` plain training steps (forward of both sides, InfoNCE, backward,
  gradient clipping, fused AdamW) on the batches of the config's data module, pairs/s;

eager (the encoder as built, no padding multiple) against a copy compiled in place by
:func:`compile_encoder` with ``pad_to_multiple_of=--pad`` and ``dynamic=--dynamic``. The compiled
copy's first pass (encoding) and first steps (training) are timed separately: their excess over
an eager pass is the compile time a sweep point pays.

**Recompilation survey** (``--survey-pads``): for every padding multiple and ``dynamic`` in
(False, None, True), the number of graphs dynamo compiles over one encoding pass and the training
batches, counted with the ``eager`` backend (graph capture and guards are the backend's business
only after the count, so the number is the one Inductor would compile), against the number of
distinct (batch, length) shapes. Beyond ``torch._dynamo.config.recompile_limit`` graphs, dynamo
runs the frame eagerly. The survey runs a copy of the backbone cut to its first layer: the
guards, and so the count, depend on the input shapes, not on the depth.

    OMP_NUM_THREADS=1 python benchmarks/bench_compile.py --model tiny_wide --texts 3000 --steps 12
"""

from __future__ import annotations

import copy
import itertools
import math
import statistics
import time

import numpy as np
import torch
from common import build_corpora_and_encoder, build_datamodule, build_module, interleave, load_config, machine, parser, write_results
from torch._dynamo.utils import counters

from hybridsweep.data.datamodule import PairCollator
from hybridsweep.encoders.compile import compile_encoder
from hybridsweep.evaluation.evaluator import embed, encoding_trainer, length_sorted_batches
from hybridsweep.precision import autocast_context

CPU = torch.device("cpu")


def parse_dynamic(value: str) -> bool | None:
    return {"true": True, "false": False, "none": None}[value.lower()]


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--precisions", default="fp32,bf16")
    args.add_argument("--texts", type=int, default=2000, help="questions + candidates encoded per pass")
    args.add_argument("--steps", type=int, default=10, help="training steps per round (after the first)")
    args.add_argument("--pad", type=int, default=16, help="pad_to_multiple_of of the compiled encoder")
    args.add_argument("--dynamic", default="none", help="torch.compile dynamic: true, false or none")
    args.add_argument("--survey-pads", default="0,8,16,32,64", help="padding multiples of the survey (0: none)")
    args.add_argument("--survey-texts", type=int, default=0, help="texts of the survey's encoding pass (0: as --texts)")
    args.add_argument("--survey-steps", type=int, default=0, help="training batches of the survey (0: as --steps + 1)")
    args.add_argument("--skip", default="", help="comma-separated parts to leave out: encode, train, survey")
    args.set_defaults(rounds=2)
    args = args.parse_args()
    trainer = encoding_trainer("cpu")  # the pipeline's encoding path (trainer.predict), one Trainer for every pass
    skip = set(filter(None, args.skip.split(",")))
    dynamic = parse_dynamic(args.dynamic)
    # The encoder as built is the eager side; this benchmark compiles its own copies.
    cfg = load_config(args.model, [*args.overrides, "model.compile=false"])
    corpus, eval_corpus, encoder = build_corpora_and_encoder(cfg)
    half = args.texts // 2
    questions = [q.text for q in eval_corpus.questions][:half]
    candidates = [c.text for c in eval_corpus.candidates][: args.texts - len(questions[:half])]
    n_texts = len(questions) + len(candidates)
    datamodule = build_datamodule(cfg, corpus, encoder)
    datamodule.collator = list  # batches of raw pair rows, tokenized below by each encoder's own collator
    n_rows = max(args.steps + 1, args.survey_steps)
    rows = list(itertools.islice(itertools.cycle(datamodule.train_dataloader()), n_rows))
    print(f"machine: {machine()}")
    print(f"model: {encoder.name} ({args.model}); {n_texts} texts per encoding pass (batch {cfg.eval.batch_size}); "
          f"training batch {cfg.batch_size}, {args.steps} timed steps; compiled: pad_to_multiple_of={args.pad}, "
          f"dynamic={dynamic}", flush=True)
    figures: dict = {"model": args.model, "encoder": encoder.name, "texts": n_texts, "train_batch": cfg.batch_size,
                     "steps": args.steps, "pad_to_multiple_of": args.pad, "dynamic": args.dynamic}

    def encode_pass(model, precision: str) -> float:
        start = time.perf_counter()
        embed(model, questions, "query", cfg.eval.batch_size, precision=precision, trainer=trainer)
        embed(model, candidates, "passage", cfg.eval.batch_size, precision=precision, trainer=trainer)
        return time.perf_counter() - start

    def trainer_for(model, precision: str):
        module = build_module(cfg, model)
        optimizer, _ = module.optimizer_and_schedule(10 * args.steps)

        def step(batch) -> None:
            with autocast_context(precision, CPU):
                loss = module.loss(model(**batch["query"]), model(**batch["passage"]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.gradient_clip_val)
            optimizer.step()
        return step

    for precision in args.precisions.split(",") if {"encode", "train"} - skip else []:
        torch._dynamo.reset()
        counters.clear()
        eager = copy.deepcopy(encoder)
        compiled = compile_encoder(copy.deepcopy(encoder), True, dynamic=dynamic)
        compiled.pad_to_multiple_of = args.pad
        result: dict = {}
        if "encode" not in skip:
            eager_first = encode_pass(eager, precision)
            compiled_first = encode_pass(compiled, precision)
            graphs_after_first = counters["stats"]["unique_graphs"]
            rates = interleave({
                "eager": lambda model=eager, precision=precision: n_texts / encode_pass(model, precision),
                "compiled": lambda model=compiled, precision=precision: n_texts / encode_pass(model, precision),
            }, args.rounds)
            steady = n_texts / statistics.median(rates["compiled"])
            result["encode"] = {
                "eager_texts_per_s": statistics.median(rates["eager"]),
                "compiled_texts_per_s": statistics.median(rates["compiled"]),
                "compiled_over_eager": statistics.median(c / e for c, e in zip(rates["compiled"], rates["eager"])),
                "eager_first_pass_s": eager_first, "compiled_first_pass_s": compiled_first,
                "compile_s": compiled_first - steady, "graphs": graphs_after_first,
                "graphs_after_rounds": counters["stats"]["unique_graphs"],
            }
            print(f"[{precision}] encode: {result['encode']}", flush=True)
        if "train" not in skip:
            counters.clear()
            eager_batches = [PairCollator(encoder.text_tokenizer)(batch) for batch in rows[: args.steps + 1]]
            compiled_batches = [PairCollator(compiled.text_tokenizer)(batch) for batch in rows[: args.steps + 1]]

            def train_rate(model, own_batches, first: list | None = None, precision=precision):
                step = trainer_for(model, precision)

                def run() -> float:
                    model.train()
                    start = time.perf_counter()
                    step(own_batches[0])
                    if first is not None:
                        first.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    for batch in own_batches[1:]:
                        step(batch)
                    return args.steps * cfg.batch_size / (time.perf_counter() - start)
                return run

            compiled_first: list[float] = []
            eager_run = train_rate(copy.deepcopy(encoder), eager_batches)
            compiled_run = train_rate(compiled, compiled_batches, compiled_first)
            rates = interleave({"eager": eager_run, "compiled": compiled_run}, args.rounds)
            step_s = cfg.batch_size / statistics.median(rates["compiled"])
            result["train"] = {
                "eager_pairs_per_s": statistics.median(rates["eager"]),
                "compiled_pairs_per_s": statistics.median(rates["compiled"]),
                "compiled_over_eager": statistics.median(c / e for c, e in zip(rates["compiled"], rates["eager"])),
                "compile_s": compiled_first[0] - step_s,
                "graphs": counters["stats"]["unique_graphs"],
            }
            print(f"[{precision}] train: {result['train']}", flush=True)
        figures[precision] = result

    if "survey" not in skip:
        survey_texts = questions + candidates
        if args.survey_texts:
            every = [q.text for q in eval_corpus.questions] + [c.text for c in eval_corpus.candidates]
            survey_texts = every[:: max(1, len(every) // args.survey_texts)][: args.survey_texts]
        figures["survey_texts"], figures["survey_steps"] = len(survey_texts), args.survey_steps or args.steps + 1
        figures["survey"] = survey(encoder, survey_texts, rows[: figures["survey_steps"]],
                                   [int(p) for p in args.survey_pads.split(",")], cfg.eval.batch_size)
    write_results(f"compile_{args.model}" + "".join(f"_no-{part}" for part in sorted(skip)), figures)


def survey(encoder, texts: list[str], rows: list[list[dict]], pads: list[int], batch_size: int) -> list[dict]:
    """Graphs compiled (eager backend) per padding multiple and ``dynamic``, and the distinct shapes."""
    results = []
    for pad, dynamic in itertools.product(pads, (False, None, True)):
        if pad and encoder.max_length % pad:
            # The tokenizer refuses to truncate to a length that is not a multiple of the padding one.
            print(f"survey: pad_to_multiple_of={pad} skipped: max_length {encoder.max_length} is not a multiple of it")
            continue
        model = copy.deepcopy(encoder)
        model.backbone.encoder.layer = model.backbone.encoder.layer[:1]
        model.pad_to_multiple_of = pad or None
        counts = np.asarray(model.text_tokenizer.lengths(texts, "passage"))
        multiple = pad or 1
        shapes = {(len(b), multiple * math.ceil(counts[b].max() / multiple)) for b in length_sorted_batches(counts, batch_size)}
        graphs = {}
        torch._dynamo.reset()
        counters.clear()
        compile_encoder(model, True, dynamic=dynamic, backend="eager")
        embed(model, texts, "passage", batch_size, trainer=encoding_trainer("cpu"))
        graphs["encode"] = counters["stats"]["unique_graphs"]
        train_shapes = set()
        torch._dynamo.reset()  # a fresh budget of recompile_limit graphs for the training part
        counters.clear()
        model.train()
        for batch in map(PairCollator(model.text_tokenizer), rows):
            for role in ("query", "passage"):
                train_shapes.add(tuple(batch[role]["input_ids"].shape))
                model(**batch[role]).sum().backward()
        graphs["train"] = counters["stats"]["unique_graphs"]
        limit = torch._dynamo.config.recompile_limit
        result = {"pad_to_multiple_of": pad, "dynamic": str(dynamic), "encode_shapes": len(shapes),
                  "encode_graphs": graphs["encode"], "train_shapes": len(train_shapes), "train_graphs": graphs["train"],
                  # Parts whose graphs reached the limit: every further new shape runs eagerly.
                  "hit_recompile_limit": [part for part, n in graphs.items() if n >= limit]}
        print(f"survey: {result}", flush=True)
        results.append(result)
    torch._dynamo.reset()
    return results


if __name__ == "__main__":
    main()
