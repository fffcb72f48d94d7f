"""rank1: a preset of DPO with a rank-1 LoRA adapter and a small, careful training budget.

The loss is plain sigmoid DPO (see :mod:`prefopt.algorithms.dpo`; Rafailov et al., NeurIPS
2023, https://arxiv.org/abs/2305.18290); only the run-config defaults differ:

======================================  =====================================
``lora.r`` / ``lora.alpha``             1 / 1
``lora.target_modules``                 o_proj, v_proj, up_proj, down_proj
``algorithm.beta``                      0.1
``training.learning_rate``              5e-7
``training.max_steps``                  100
``training.per_device_train_batch_size`` 2
``training.gradient_accumulation_steps`` 4
======================================  =====================================

A rank-1 adapter on the attention output/value and MLP projections changes the model along a
single direction per matrix: a light-touch edit that is cheap to train, store and merge.
Every value above is a default of the lowest layer: a YAML config, a flag or ``--set``
overrides it (``prefopt train rank1 --set lora.r=4``).
"""

from __future__ import annotations

from typing import Any

import prefopt
from prefopt.algorithms.dpo import DPOConfig, make_loss
from prefopt.api import AlgorithmSpec

RANK1_DEFAULTS: dict[str, Any] = {
    "lora.r": 1,
    "lora.alpha": 1,
    "lora.target_modules": ["o_proj", "v_proj", "up_proj", "down_proj"],
    "algorithm.beta": 0.1,
    "training.learning_rate": 5e-7,
    "training.max_steps": 100,
    "training.per_device_train_batch_size": 2,
    "training.gradient_accumulation_steps": 4,
}


def run_name(config: DPOConfig, model_short: str) -> str:
    return f"Rank1DPO_{model_short}"


SPEC = AlgorithmSpec(
    name="rank1",
    summary="Rank-1 LoRA DPO preset (r=1 on o/v/up/down projections, lr 5e-7, 100 steps).",
    config_class=DPOConfig,
    make_loss=make_loss,
    defaults=RANK1_DEFAULTS,
    run_name=run_name,
)


@prefopt.hookimpl
def prefopt_algorithms() -> list[AlgorithmSpec]:
    return [SPEC]
