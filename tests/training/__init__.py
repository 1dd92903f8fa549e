"""Training: the classifier, the optimizer, checkpoints, datasets, diagnostics."""
