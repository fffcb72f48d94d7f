"""Training: the PreferenceTrainer, reference strategies, callbacks and run orchestration.

Import submodules directly (``prefopt.training.trainer``); this package imports nothing heavy.
"""
