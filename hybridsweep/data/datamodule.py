"""The Lightning data modules' common ground and the in-memory module: training pairs of a corpus,
batched by the hybrid sampler, and the fixed validation batches of the question ids held out of
training. The streamed module (:mod:`hybridsweep.data.streaming`) shares the base,
:class:`TrainingPairsModule`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import lightning as L
from torch.utils.data import DataLoader

from hybridsweep.callbacks import loader_generator
from hybridsweep.data.parallel_qa import ParallelQA, split_question_ids, training_pairs
from hybridsweep.data.sampler import HybridBatchSampler
from hybridsweep.model import TextTokenizer
from hybridsweep.sampling import CROSS, MONO, SamplingRule, check_divisible, rank_slice

VALIDATION_SAMPLING = {"strategy": "hybrid", "mix_ratio": 0.5, "mono_batches": "per_language",
                       "mono_language_weights": "uniform"}
"""Validation batches are hybrid with P(monolingual) = 0.5 and one language per monolingual batch
(the paper's training batches) whatever the training strategy, drawn
once with seed 0, and of ``data.validation_batch_size`` pairs whatever the training batch size:
every point of a sweep is validated on the same batches, so ``val/loss`` (a contrastive entropy
at a fixed number of negatives) compares across strategies, batch sizes and data scales."""


class PairCollator:
    """Tokenises a list of pairs into the query and passage inputs of one training step."""

    def __init__(self, tokenizer: TextTokenizer):
        self.tokenizer = tokenizer

    def __call__(self, rows: list[dict]) -> dict:
        mono = {row["is_mono"] for row in rows}
        return {
            "query": self.tokenizer([row["question"] for row in rows], "query"),
            "passage": self.tokenizer([row["passage"] for row in rows], "passage"),
            # The sampler never mixes types within a batch, so one flag describes it.
            "is_mono": mono == {True},
        }


def sampler_options(sampling: Mapping) -> dict:
    """The batch sampler's keyword arguments from the ``sampling`` config node."""
    return {
        "strategy": str(getattr(sampling["strategy"], "value", sampling["strategy"])), "mix_ratio": sampling["mix_ratio"],
        "mono_batches": sampling["mono_batches"], "mono_language_weights": sampling["mono_language_weights"],
    }


class ValidationBatches:
    """The validation pairs of the held-out question ids and their fixed global batches
    (:data:`VALIDATION_SAMPLING`); each rank takes its slice of every batch."""

    def __init__(self, corpus: ParallelQA, question_ids: list[str], batch_size: int, tokenizer: TextTokenizer):
        self.pairs = training_pairs(corpus.select_ids(set(question_ids)))
        self.collator = PairCollator(tokenizer)
        try:
            sampler = HybridBatchSampler(self.pairs["qid"], self.pairs["is_mono"], batch_size, seed=0,
                                         languages=self.pairs["q_lang"], **VALIDATION_SAMPLING)
        except ValueError as error:
            raise ValueError(f"data.validation_batch_size={batch_size} does not fit the {len(question_ids)} "
                             f"validation question ids: {error}") from None
        self.batches = list(sampler)

    def loader(self, rank: int, world_size: int) -> DataLoader:
        check_divisible(len(self.batches[0]), world_size)
        batches = [rank_slice(batch, rank, world_size) for batch in self.batches]
        return DataLoader(self.pairs, batch_sampler=batches, collate_fn=self.collator)


class EpochResumableLoader(DataLoader):
    """The training loader of :class:`HybridBatchSampler`. It owns the epoch count, and its
    ``state_dict`` is its position: the epoch and the batches of it handed out.

    Each pass starts where the last one stopped: the next epoch (``sampler.set_epoch``) after a
    finished one, else the rest of the current one. Lightning calls ``set_epoch`` only on a
    loader's ``sampler`` (or ``batch_sampler.sampler``), never on a batch sampler, so without
    this every epoch would repeat the batches of epoch 0. Checkpoints keep ``state_dict()`` (see
    :class:`ResumableTrainingData`), restored by ``load_state_dict``; the sampler then draws the epoch from
    ``(seed, epoch)`` as before and skips the batches already trained (``sampler.start``), so a
    run resumed in the middle of an epoch trains on the batches an uninterrupted run trains on.
    The loader has a length, so Lightning fetches no batch ahead of the step it runs.
    """

    def __init__(self, pairs, sampler: HybridBatchSampler, collate_fn, num_workers: int = 0):
        super().__init__(pairs, batch_sampler=sampler, collate_fn=collate_fn, num_workers=num_workers,
                         persistent_workers=num_workers > 0, generator=loader_generator())
        self.position = {"epoch": 0, "batches": 0}

    def __iter__(self) -> Iterator[dict]:
        epoch, handed = self.position["epoch"], self.position["batches"]
        if handed >= len(self.batch_sampler):
            epoch, handed = epoch + 1, 0
        self.batch_sampler.set_epoch(epoch)
        self.batch_sampler.start = handed
        for batch in super().__iter__():
            handed += 1
            self.position = {"epoch": epoch, "batches": handed}
            yield batch

    def state_dict(self) -> dict:
        return dict(self.position)

    def load_state_dict(self, state_dict: dict) -> None:
        self.position = dict(state_dict)


class ResumableTrainingData(L.LightningDataModule):
    """A data module whose checkpointed state is the position of its training loader.

    Lightning loads a loader's own ``state_dict`` only into a loader it builds after restoring
    the loops; the module's ``configure_optimizers`` reads ``trainer.estimated_stepping_batches``
    (the warm-up schedule's length), which builds the loader before that, so the position would
    be dropped and a resumed run would start its epoch over. A data module's state is restored
    before anything is built: the module saves its loader's position and hands a restored one to
    the loader it builds next (:meth:`resumable`).
    """

    def __init__(self):
        super().__init__()
        self.training_loader: DataLoader | None = None
        self.restored_position: dict | None = None

    def resumable(self, loader: DataLoader) -> DataLoader:
        """``loader`` (one with ``state_dict``/``load_state_dict``), at the restored position if any."""
        if self.restored_position is not None:
            loader.load_state_dict(self.restored_position)
            self.restored_position = None
        self.training_loader = loader
        return loader

    def state_dict(self) -> dict:
        return {"training_position": self.training_loader.state_dict()} if self.training_loader is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self.restored_position = state_dict.get("training_position")


class TrainingPairsModule(ResumableTrainingData):
    """What the in-memory and the streamed data modules share: the validation batches of the
    question ids held out of training (the first ``validation`` of ``corpus``'s ids in the fixed
    shuffle of :func:`split_question_ids`, the same at every data scale), the params that describe
    the training data (:attr:`stats`), and each rank's slice of the validation batches.

    A subclass sets :attr:`rule` (its sampler's :class:`~hybridsweep.sampling.SamplingRule`) and
    :attr:`question_ids` (how many question ids it trains on), and builds the training loader.
    """

    rule: SamplingRule
    question_ids: int

    def __init__(self, corpus: ParallelQA, tokenizer: TextTokenizer, subset_seed: int, validation: float,
                 validation_batch_size: int, num_workers: int):
        super().__init__()
        self.num_workers = num_workers
        _, validation_ids = split_question_ids(corpus.question_ids, 1.0, subset_seed, validation)
        self.validation = (ValidationBatches(corpus, validation_ids, validation_batch_size, tokenizer)
                           if validation_ids else None)

    @property
    def stats(self) -> dict[str, float]:
        return {
            "data.pairs_mono": self.rule.pool_sizes[MONO],
            "data.pairs_cross": self.rule.pool_sizes[CROSS],
            "data.question_ids": self.question_ids,
            "data.validation_pairs": len(self.validation.pairs) if self.validation else 0,
            "sampling.mix_ratio_effective": self.rule.mix_ratio,
            "sampling.steps_per_epoch": self.rule.steps_per_epoch,
        }

    def rank(self) -> tuple[int, int]:
        """(global rank, world size) of the Trainer this module serves; (0, 1) without one."""
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)

    def val_dataloader(self) -> DataLoader | list:
        return self.validation.loader(*self.rank()) if self.validation else []


class PairDataModule(TrainingPairsModule):
    """Serves the (question, passage) pairs of the training question ids of a corpus.

    The question ids are split once (:func:`split_question_ids` with ``subset_seed``): the first
    ``validation`` of them are held out for ``val/loss``, and training uses the first ``scale``
    of the rest, so the data-scale axis of a sweep is nested and never sees a validation id.
    """

    def __init__(
        self,
        corpus: ParallelQA,
        tokenizer: TextTokenizer,
        batch_size: int,
        sampling: Mapping,
        scale: float = 1.0,
        seed: int = 0,
        subset_seed: int = 0,
        validation: float = 0.0,
        validation_batch_size: int = 32,
        num_workers: int = 0,
    ):
        super().__init__(corpus, tokenizer, subset_seed, validation, validation_batch_size, num_workers)
        train_ids, _ = split_question_ids(corpus.question_ids, scale, subset_seed, validation)
        self.pairs = training_pairs(corpus.select_ids(set(train_ids)))
        self.collator = PairCollator(tokenizer)
        self.sampler = HybridBatchSampler(self.pairs["qid"], self.pairs["is_mono"], batch_size, seed=seed,
                                          languages=self.pairs["q_lang"], **sampler_options(sampling))
        self.rule, self.question_ids = self.sampler.rule, len(set(self.pairs["qid"]))

    def train_dataloader(self) -> DataLoader:
        # Every rank draws the global batch and takes its slice (use_distributed_sampler=False).
        self.sampler.rank, self.sampler.world_size = self.rank()
        check_divisible(self.sampler.batch_size, self.sampler.world_size)
        return self.resumable(EpochResumableLoader(self.pairs, self.sampler, self.collator, self.num_workers))
