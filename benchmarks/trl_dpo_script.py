"""The TRL side of benchmarks/dpo_vs_trl.py: the DPO script a TRL user writes, no prefopt in it.

Trains a model folder on a JSONL file of ``prompt``/``chosen``/``rejected`` pairs with TRL's
``DPOTrainer`` and the same LoRA, learning rate, β, batch and steps as the prefopt side (r 16,
alpha 32, all linear layers, no dropout, no gradient checkpointing), then saves the adapter,
as ``prefopt train`` does. Run as a whole process it is the "whole command" that
``prefopt train dpo`` is compared with; :func:`make_trainer` is also used by the benchmark's
timed TRL worker, so the two measure the same setup.

    python benchmarks/trl_dpo_script.py --model M --data pairs.jsonl --output out \\
        --steps 4 --batch 8 [--bf16] [--precompute]
"""

from __future__ import annotations

import argparse
from typing import Any


def make_trainer(
    model_path: str,
    data_path: str,
    output: str,
    steps: int,
    batch: int,
    bf16: bool,
    precompute: bool = False,
) -> Any:
    """A ``DPOTrainer`` on the model and data, LoRA r16 all-linear, lr 5e-5, β 0.1."""
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=torch.float32, attn_implementation="sdpa"
    )
    config = DPOConfig(
        output_dir=output,
        per_device_train_batch_size=batch,
        max_steps=steps,
        logging_steps=steps,
        save_strategy="no",
        report_to="none",
        learning_rate=5e-5,
        beta=0.1,
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=False,
        disable_tqdm=True,
        seed=42,
        precompute_ref_log_probs=precompute,
    )
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    data = datasets.load_dataset("json", data_files=data_path, split="train")
    extra = [name for name in data.column_names if name not in ("prompt", "chosen", "rejected")]
    data = data.remove_columns(extra)
    return DPOTrainer(
        model=model, args=config, train_dataset=data, processing_class=tokenizer, peft_config=lora
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--precompute", action="store_true", help="precompute_ref_log_probs")
    args = parser.parse_args(argv)
    trainer = make_trainer(
        args.model, args.data, args.output, args.steps, args.batch, args.bf16, args.precompute
    )
    trainer.train()
    trainer.save_model(args.output)


if __name__ == "__main__":
    main()
