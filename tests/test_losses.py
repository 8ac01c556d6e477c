import math

import pytest
import torch

from hybridsweep.losses import InfoNCELoss


def _hand_cross_entropy(rows: list[list[float]]) -> float:
    """Mean over rows of -log softmax(row)[i] at the diagonal, written out by hand."""
    total = 0.0
    for i, row in enumerate(rows):
        total += -(row[i] - math.log(sum(math.exp(v) for v in row)))
    return total / len(rows)


def test_infonce_matches_hand_computed_cross_entropy_on_3x3():
    # Unit vectors chosen so that q.p is easy to write down.
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    p = torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]])
    similarities = [[0.8, 0.0, 1.0], [0.6, 1.0, 0.0], [0.96, 0.8, 0.6]]
    tau = 0.5
    scaled = [[v / tau for v in row] for row in similarities]
    expected = _hand_cross_entropy(scaled)
    assert InfoNCELoss(temperature=tau)(q, p).item() == pytest.approx(expected, rel=1e-6)

    columns = [[scaled[j][i] for j in range(3)] for i in range(3)]
    symmetric = (expected + _hand_cross_entropy(columns)) / 2
    assert InfoNCELoss(temperature=tau, symmetric=True)(q, p).item() == pytest.approx(symmetric, rel=1e-6)


def test_infonce_rejects_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(temperature=0)
