"""The Lightning data module: training pairs of a corpus, batched by the hybrid sampler."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from hybridsweep.data.parallel_qa import ParallelQA, nested_subset_ids, training_pairs
from hybridsweep.model import TextEncoder
from hybridsweep.sampling import HybridBatchSampler, check_divisible


class PairCollator:
    """Tokenises a list of pairs into the query and passage inputs of one training step."""

    def __init__(self, encoder: TextEncoder):
        self.encoder = encoder

    def __call__(self, rows: list[dict]) -> dict:
        mono = {row["is_mono"] for row in rows}
        return {
            "query": self.encoder.tokenize([row["question"] for row in rows], "query"),
            "passage": self.encoder.tokenize([row["passage"] for row in rows], "passage"),
            # The sampler never mixes types within a batch, so one flag describes it.
            "is_mono": mono == {True},
        }


class PairDataModule(L.LightningDataModule):
    """Serves the (question, passage) pairs of the first ``scale`` of a corpus's question ids.

    ``scale`` follows :func:`nested_subset_ids` (a fraction, or a count of question ids), and the
    subset depends only on ``subset_seed``, so the data-scale axis of a sweep is nested.
    """

    def __init__(
        self,
        corpus: ParallelQA,
        encoder: TextEncoder,
        batch_size: int,
        strategy: str,
        mix_ratio: float | str,
        scale: float = 1.0,
        seed: int = 0,
        subset_seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        keep = set(nested_subset_ids(corpus.question_ids, scale, subset_seed))
        self.pairs = training_pairs(corpus.select_ids(keep))
        self.collator = PairCollator(encoder)
        self.num_workers = num_workers
        self.sampler = HybridBatchSampler(
            self.pairs["qid"], self.pairs["is_mono"], batch_size, strategy, mix_ratio, seed
        )

    @property
    def stats(self) -> dict[str, float]:
        n_mono = len(self.sampler.mono)
        return {
            "data.pairs_mono": n_mono,
            "data.pairs_cross": len(self.pairs) - n_mono,
            "data.question_ids": len(set(self.pairs["qid"])),
            "sampling.mix_ratio_effective": self.sampler.mix_ratio,
            "sampling.steps_per_epoch": len(self.sampler),
        }

    def train_dataloader(self) -> DataLoader:
        if self.trainer is not None:
            # Every rank draws the global batch and takes its slice (use_distributed_sampler=False).
            self.sampler.rank, self.sampler.world_size = self.trainer.global_rank, self.trainer.world_size
            check_divisible(self.sampler.batch_size, self.sampler.world_size)
        return DataLoader(
            self.pairs, batch_sampler=self.sampler, collate_fn=self.collator,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )
