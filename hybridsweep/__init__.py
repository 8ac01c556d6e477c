"""hybridsweep: hybrid monolingual/cross-lingual batch training of multilingual dual encoders,
swept over batch size, mixing ratio and data scale, evaluated zero-shot and tracked in MLflow."""

__version__ = "0.1.0"
