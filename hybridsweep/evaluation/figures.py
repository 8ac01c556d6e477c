"""Figures of evaluation results: the query-language x candidate-language heatmap."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def heatmap(matrix: pd.DataFrame, title: str) -> plt.Figure:
    """An annotated heatmap of a query-language x candidate-language matrix."""
    size = 1.0 + 0.55 * max(matrix.shape)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    image = axes.imshow(matrix.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis")
    axes.set_xticks(range(matrix.shape[1]), matrix.columns)
    axes.set_yticks(range(matrix.shape[0]), matrix.index)
    axes.set_xlabel(f"{matrix.columns.name or 'candidate'} language")
    axes.set_ylabel(f"{matrix.index.name or 'query'} language")
    for (i, j), value in pd.DataFrame(matrix.to_numpy(dtype=float)).stack().items():
        axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value < 0.6 else "black")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    return figure
