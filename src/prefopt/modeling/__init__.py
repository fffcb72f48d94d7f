"""Loading models and tokenizers, LoRA, log-probability computation and merging."""
