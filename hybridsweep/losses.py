"""Contrastive losses over in-batch negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InfoNCELoss(nn.Module):
    """In-batch-negative InfoNCE over (question, passage) embeddings.

    With L2-normalised question embeddings q_i, passage embeddings p_i (i = 1..B) and temperature
    tau, the similarity matrix is S_ij = q_i . p_j / tau and the question-to-passage loss is

        L_q2p = -1/B * sum_i log( exp(S_ii) / sum_j exp(S_ij) )

    i.e. cross-entropy with the diagonal as target: every other passage of the batch is a negative
    for q_i. With ``symmetric=True`` the passage-to-question direction (softmax over the columns
    of S, the other questions as negatives) is added and the two are averaged:
    L = (L_q2p + L_p2q) / 2. The default is the one-directional form used by DPR and
    sentence-transformers' MultipleNegativesRankingLoss.
    """

    def __init__(self, temperature: float = 0.05, symmetric: bool = False):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"loss.temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.symmetric = symmetric

    def forward(self, questions: torch.Tensor, passages: torch.Tensor) -> torch.Tensor:
        scores = questions @ passages.T / self.temperature
        targets = torch.arange(scores.shape[0], device=scores.device)
        loss = F.cross_entropy(scores, targets)
        if self.symmetric:
            loss = (loss + F.cross_entropy(scores.T, targets)) / 2
        return loss
