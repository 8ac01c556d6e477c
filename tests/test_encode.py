"""Encoding order: token counts as the model sees them, and batches sorted by them."""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hybridsweep.data.synthetic import generate
from hybridsweep.encoders.tiny import tiny_bert
from hybridsweep.evaluation.evaluator import embed, length_sorted_batches


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    encoder = tiny_bert(generate(n_people=30, split="train"), cache_dir=str(tmp_path_factory.mktemp("cache")), vocab_size=800)
    encoder.prefixes = {"query": "q: ", "passage": ""}
    return encoder


def test_token_counts_are_the_lengths_of_each_text_tokenized_alone(encoder):
    texts = [c.text for c in generate(n_people=20, split="eval").candidates][:50]
    texts.append(" ".join(texts))  # longer than max_length: truncated
    for role in ("query", "passage"):
        alone = [len(encoder.tokenizer(encoder.prefixes[role] + t, truncation=True, max_length=encoder.max_length)["input_ids"])
                 for t in texts]
        np.testing.assert_array_equal(encoder.text_tokenizer.lengths(texts, role), alone)
    assert alone[-1] == encoder.max_length


def test_batches_cover_every_text_once_in_ascending_token_count():
    counts = np.array([5, 1, 3, 1, 9, 2, 3])
    batches = length_sorted_batches(counts, 3)
    assert [b.tolist() for b in batches] == [[1, 3, 5], [2, 6, 0], [4]]
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 60, size=1000)
    batches = length_sorted_batches(counts, 64)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    assert (np.diff(counts[flat]) >= 0).all() and [len(b) for b in batches] == [64] * 15 + [40]
    with pytest.raises(ValueError, match="batch_size=0"):
        length_sorted_batches(counts, 0)


class _WeightCasts(TorchDispatchMode):
    """Counts bf16 copies made of the given parameters."""

    def __init__(self, parameters):
        super().__init__()
        self.pointers, self.count = {p.data_ptr() for p in parameters}, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        source = args[0] if args else None
        if isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16 and isinstance(source, torch.Tensor):
            self.count += source.dtype == torch.float32 and source.data_ptr() in self.pointers
        return out


def test_a_bf16_pass_casts_each_weight_once_and_embeds_as_batch_by_batch_autocast(encoder):
    """Against a plain loop that autocasts each batch on its own (each weight cast once a batch):
    the pipeline's pass gives the same embeddings bit for bit, and casts each weight once."""
    texts = [c.text for c in generate(n_people=20, split="eval").candidates][:40]
    batch_size = 8
    weights = [p for name, p in encoder.named_parameters() if p.dim() == 2 and "embeddings" not in name]
    order = length_sorted_batches(encoder.text_tokenizer.lengths(texts, "passage"), batch_size)
    rows = {}
    encoder.eval()  # as trainer.predict runs it
    with torch.inference_mode(), _WeightCasts(weights) as loop:
        for positions in order:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                inputs = encoder.text_tokenizer([texts[i] for i in positions], "passage")
                rows.update(zip(positions.tolist(), encoder(**inputs).float().numpy()))
    expected = np.stack([rows[i] for i in range(len(texts))])
    assert loop.count == len(order) * len(weights)

    with _WeightCasts(weights) as pipeline:
        got = embed(encoder, texts, "passage", batch_size=batch_size, precision="bf16")
    np.testing.assert_array_equal(got, expected)
    assert pipeline.count == len(weights)
