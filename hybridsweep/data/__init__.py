"""Corpora (embedded synthetic and real benchmarks), training pairs and the Lightning data module."""
