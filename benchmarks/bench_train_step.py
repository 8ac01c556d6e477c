"""Training throughput (pairs/s): the Lightning module against a plain PyTorch loop and sentence-transformers.

Three ways to train the same initial model on the same pairs with the same loss, interleaved per
round, each for ``--steps`` steps of ``batch_size`` pairs:

* ``lightning``: the config's :class:`DualEncoderModule` (``module``) under the Trainer of the
  config (MLflow logger, progress bar and gradient clipping included), batches from the config's
  data module (``data.module``), both built as train.py builds them (``common.build_module``,
  ``common.build_datamodule``).
* ``plain loop``: the same batches from the same data loader, forward, InfoNCE, backward, gradient
  clipping, AdamW step and schedule step, written out by hand: the framework-overhead limit. It
  runs at the Trainer's precision (``trainer.precision=bf16-mixed``: forward and loss under bf16
  autocast, as Lightning's plugin does), so the two compare at equal settings.
* ``sentence-transformers``: the backbone saved and reloaded as a ``SentenceTransformer``
  (Transformer + mean Pooling) trained by ``SentenceTransformerTrainer`` with
  ``MultipleNegativesRankingLoss`` (scale 1/temperature, cosine similarity: the same loss) on the
  same pairs, batched by its own random sampler, at its own defaults (fp32, fused AdamW).

The rate is measured from the end of the first step to the end of the last, so start-up and the
first step's one-off costs are excluded on every side; data loading and tokenisation are included.

    OMP_NUM_THREADS=1 python benchmarks/bench_train_step.py --model tiny
"""

from __future__ import annotations

import copy
import itertools
import tempfile
import time
import warnings

import torch
from common import (
    bench_tracker,
    build_corpora_and_encoder,
    build_datamodule,
    build_module,
    interleave,
    load_config,
    machine,
    parser,
    ratio_report,
    step_precision,
    write_results,
)
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback

from hybridsweep.model import DualEncoderModule
from hybridsweep.precision import autocast_context


def pairs_per_second(step_ends: list[float], batch_size: int) -> float:
    return (len(step_ends) - 1) * batch_size / (step_ends[-1] - step_ends[0])


class StepClock(Callback):
    """Records the wall time at the end of every training step."""

    def __init__(self):
        self.ends: list[float] = []

    def on_train_batch_end(self, *args) -> None:
        self.ends.append(time.perf_counter())


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--steps", type=int, default=30)
    args.add_argument("--skip-st", action="store_true", help="leave sentence-transformers out")
    args = args.parse_args()
    # The three sides train the same eager model (model.compile is bench_compile.py's subject).
    cfg = load_config(args.model, [*args.overrides, "model.compile=false"])
    corpus, _, encoder = build_corpora_and_encoder(cfg)
    steps, batch_size = args.steps, cfg.batch_size

    def datamodule():
        return build_datamodule(cfg, corpus, encoder)

    def fresh_module() -> DualEncoderModule:
        # In training mode on every side (dropout on): a backbone loaded by from_pretrained starts in
        # eval mode, and Lightning keeps the modes it finds, so left alone that side would skip dropout.
        return build_module(cfg, copy.deepcopy(encoder)).train()

    precision, plain_precision = str(cfg.trainer.precision), step_precision(cfg)
    tmp = tempfile.TemporaryDirectory()
    print(f"machine: {machine()}")
    print(f"model: {encoder.name} ({args.model}); batch {batch_size}; {steps} steps per round; "
          f"trainer.precision={precision} (plain loop {plain_precision}, sentence-transformers fp32)")

    def lightning_run() -> float:
        clock = StepClock()
        with bench_tracker(f"sqlite:///{tmp.name}/mlflow.db", "bench", "lightning") as tracker:
            trainer = instantiate(
                cfg.trainer, max_epochs=-1, max_steps=steps, logger=tracker.lightning_logger(),
                callbacks=[clock], enable_checkpointing=False, default_root_dir=tmp.name,
            )
            trainer.fit(fresh_module(), datamodule=datamodule())
        return pairs_per_second(clock.ends, batch_size)

    def plain_run() -> float:
        module = fresh_module()
        model, loss_fn = module.encoder, module.loss
        optimizer, schedule = module.optimizer_and_schedule(steps)
        loader = datamodule().train_dataloader()
        batches = itertools.chain.from_iterable(loader for _ in itertools.count())
        ends = []
        model.train()
        for batch in itertools.islice(batches, steps):
            with autocast_context(plain_precision, torch.device("cpu")):
                loss = loss_fn(model(**batch["query"]), model(**batch["passage"]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.gradient_clip_val)
            optimizer.step()
            schedule.step()
            ends.append(time.perf_counter())
        return pairs_per_second(ends, batch_size)

    candidates = {"lightning": lightning_run, "plain loop": plain_run}
    if not args.skip_st:
        # sentence-transformers trains the backbone as published: a pruned vocabulary is the project's
        # own variant (exact on the corpora's texts), so that side gets the unpruned model.
        st_encoder = encoder
        if cfg.model.get("prune_vocabulary_to_corpora"):
            unpruned = load_config(args.model, [*args.overrides, "model.compile=false", "model.prune_vocabulary_to_corpora=false"])
            st_encoder = build_corpora_and_encoder(unpruned)[2]
        candidates["sentence-transformers"] = sentence_transformers_run(cfg, st_encoder, datamodule().pairs, steps, tmp.name)
    rates = interleave(candidates, args.rounds)
    ratios = ratio_report(rates, "lightning", "pairs/s")
    pruned = "_pruned-vocabulary" if cfg.model.get("prune_vocabulary_to_corpora") else ""
    write_results(f"train_step_{args.model}_{precision}_{corpus.name}{pruned}", {
        "model": args.model, "encoder": encoder.name, "overrides": args.overrides, "batch_size": batch_size, "steps": steps,
        "trainer_precision": precision, "rounds": args.rounds, "pairs_per_s": rates,
        "lightning_over": ratios,
        "lightning_over_per_round": {name: [c / b for c, b in zip(rates["lightning"], values)]
                                     for name, values in rates.items() if name != "lightning"},
    })


def sentence_transformers_run(cfg, encoder, pairs, steps: int, workdir: str):
    """A callable training a SentenceTransformer copy of ``encoder`` for ``steps`` steps; returns pairs/s."""
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import TrainerCallback

    if encoder.pooling != "mean":
        raise SystemExit("the sentence-transformers comparison assumes mean pooling")
    # Prefixes (e5's "query: "/"passage: ") become sentence-transformers' per-column prompts.
    prompts = {"anchor": encoder.prefixes["query"], "positive": encoder.prefixes["passage"]}
    saved = f"{workdir}/backbone"
    encoder.backbone.save_pretrained(saved)
    encoder.tokenizer.save_pretrained(saved)
    dataset = pairs.select_columns(["question", "passage"]).rename_columns({"question": "anchor", "passage": "positive"})

    class Clock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, *args, **kwargs):
            self.ends.append(time.perf_counter())

    def run() -> float:
        transformer = Transformer(saved, max_seq_length=encoder.max_length)
        model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean")], device="cpu")
        training_args = SentenceTransformerTrainingArguments(
            output_dir=f"{workdir}/st", per_device_train_batch_size=cfg.batch_size, max_steps=steps,
            learning_rate=cfg.optim.optimizer.lr, weight_decay=cfg.optim.optimizer.weight_decay,
            warmup_ratio=cfg.optim.scheduler.warmup_ratio,
            max_grad_norm=cfg.trainer.gradient_clip_val, logging_steps=cfg.trainer.log_every_n_steps,
            lr_scheduler_type="linear", save_strategy="no", report_to="none",
            dataloader_drop_last=True, use_cpu=True, seed=cfg.seed,
            prompts={column: prefix for column, prefix in prompts.items() if prefix} or None,
        )
        clock = Clock()
        loss = MultipleNegativesRankingLoss(model, scale=1.0 / cfg.loss.temperature)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            SentenceTransformerTrainer(model=model, args=training_args, train_dataset=dataset, loss=loss,
                                       callbacks=[clock]).train()
        return pairs_per_second(clock.ends, cfg.batch_size)

    return run


if __name__ == "__main__":
    main()
