"""Offline evaluation: log-probs of pairs under a model, metrics, generation, judges, reports."""
