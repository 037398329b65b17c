"""Training: the run lifecycle and the pieces it runs (train, fine-tuning phases, LR sweep)."""
