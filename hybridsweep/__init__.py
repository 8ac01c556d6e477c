"""hybridsweep: hybrid monolingual/cross-lingual batch training of multilingual dual encoders,
swept over batch size, mixing ratio and data scale, evaluated zero-shot and tracked in MLflow."""

__version__ = "0.2.0"

RESULTS_VERSION = 6
"""Bumped by every change that alters what a point computes (sampling, losses, model, data,
evaluation). It is part of every point's identity (:func:`hybridsweep.tracking.identity.config_hash`), so
runs made by an earlier version are never taken for results of this one.

History: 1 — the first release (mixed-language monolingual batches, last-step weights);
2 — per-language monolingual batches, a validation slice held out of training, the evaluated
checkpoint chosen by ``eval.checkpoint``, fixed per-rank evaluation sharding; 3 — dropout on in
training for backbones loaded in eval mode (``from_pretrained``: e5-small, hub models; the
embedded tiny model was already in training mode); 4 — evaluation leaves the global random state
alone, so a point trains the same whether it evaluated its initializer itself or reused that
evaluation (the fault-injection benchmark found the difference); 5 — in-memory training draws
each epoch from ``(seed, epoch)`` (Lightning never set a batch sampler's epoch, so every epoch
repeated epoch 0's batches) and resumes mid-epoch where it stopped (it restarted the epoch); its
training loaders draw their worker seed from a generator of their own, which moves every run's
dropout stream by one draw; 6 — ``compute/*`` (pairs seen, tokens, peak memory) are the totals
of training: evaluating the best checkpoint restored the counts it was saved with, so a run whose
kept checkpoint was not its last under-reported them (its ``compute/steps`` and every other
metric were right)."""
