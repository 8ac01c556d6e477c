"""Paper tables and scaling curves built from the runs in MLflow (never by training)."""
