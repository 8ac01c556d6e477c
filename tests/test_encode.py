"""Encoding order: token counts as the model sees them, and batches sorted by them."""

import numpy as np
import pytest

from hybridsweep.data.synthetic import generate
from hybridsweep.encoders.tiny import tiny_bert
from hybridsweep.evaluation.evaluator import length_sorted_batches


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
