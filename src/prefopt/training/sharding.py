"""Sharded engines (FSDP2, DeepSpeed ZeRO): run what is asked for, or say in one line why not.

FSDP2 on CPUs. PyTorch's ``fully_shard`` runs on CPU tensors over gloo, and accelerate's
``fsdp2_prepare_model`` with it, but accelerate 1.16's ``AcceleratorState`` keeps an FSDP
plugin only for accelerator devices: the branch that sets ``DistributedType.FSDP``
(``accelerate/state.py``, ``AcceleratorState.__init__``, ``elif self.distributed_type in
[DistributedType.MULTI_GPU, ...]``) does not list ``MULTI_CPU``, so ``training.fsdp`` on
CPUs silently ran plain DDP. :func:`enable_fsdp_on_cpu` completes what that branch does for
gloo workers; everything after it (wrapping, sharded optimizer, checkpoints) is accelerate's
and the Trainer's own FSDP2 code.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from prefopt.errors import UsageError


def prepare_engine(values: dict[str, Any]) -> None:
    """Check, and on CPU workers set up, the engine that the ``training`` settings ``values``
    ask for; call just before ``TrainingArguments(**values)``."""
    if not values.get("deepspeed"):
        return
    if importlib.util.find_spec("deepspeed") is None:
        raise UsageError(
            "training.deepspeed needs the deepspeed package, which is not installed: "
            "pip install deepspeed (or use training.fsdp, which needs nothing extra)"
        )
    from prefopt.training.launch import cpu_workers

    if cpu_workers():
        _deepspeed_on_cpu(values)


def _deepspeed_on_cpu(values: dict[str, Any]) -> None:
    """Let DeepSpeed's CPU accelerator run the workers over gloo.

    Two things stop it otherwise. Told to use the CPU (``ACCELERATE_USE_CPU``, ``use_cpu``),
    accelerate skips DeepSpeed altogether (``PartialState.__init__``: ``if not cpu``) and runs
    DDP. Not told, transformers hands accelerate no backend for DeepSpeed
    (``TrainingArguments._setup_devices``) and accelerate finds none without an accelerator
    (``PartialState._prepare_backend``), so it counts one process while DeepSpeed has two, and
    DeepSpeed stops at its batch-size check. So the state is set up here, with gloo, and the
    Trainer is told to use it (``accelerator_config.use_configured_state``).
    """
    from accelerate.state import PartialState

    os.environ.pop("ACCELERATE_USE_CPU", None)  # set for gloo DDP by configure_cpu_workers
    values.pop("use_cpu", None)
    config = values.get("accelerator_config") or {}
    if not isinstance(config, dict):
        raise UsageError("training.accelerator_config must be a mapping with training.deepspeed")
    values["accelerator_config"] = {**config, "use_configured_state": True}
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"  # read by accelerate's states
    PartialState(backend="gloo")


def enable_fsdp_on_cpu(trainer: Any) -> bool:
    """Make ``training.fsdp`` shard on CPU processes (gloo) instead of silently running DDP;
    whether it was needed. Call right after the Trainer created its accelerator."""
    plugin_args = trainer.args.fsdp_plugin_args
    if plugin_args is None:
        return False
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    if state.distributed_type == DistributedType.FSDP:
        return False  # accelerate did it (GPUs)
    if state.distributed_type == DistributedType.NO:
        raise UsageError(
            "training.fsdp shards a model across processes, and this run has one: start 2 or "
            "more (--num-processes N, torchrun or accelerate launch) or drop training.fsdp"
        )
    if state.distributed_type != DistributedType.MULTI_CPU:
        raise UsageError(f"training.fsdp is not supported with {state.distributed_type.value}")
    if plugin_args.get("fsdp_version", 2) != 2:
        raise UsageError(
            "training.fsdp on CPUs runs FSDP2 only: drop training.fsdp_config.version "
            "(FSDP1 needs accelerator devices)"
        )
    plugin = FullyShardedDataParallelPlugin(**plugin_args)
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    # AcceleratorState() instances made later copy the distributed type from PartialState's
    # shared state (accelerate sets both at the end of the branch above).
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    trainer.is_fsdp_enabled = True
    return True


def shard_frozen_copy(model: Any) -> Any:
    """Shard a frozen reference model with FSDP2 the way accelerate shards the policy (each
    block of ``model._no_split_modules``, then the whole model, over all processes), so that no
    process holds it whole; its forward passes are then collective, like the policy's."""
    from torch.distributed.fsdp import fully_shard

    blocks = set(getattr(model, "_no_split_modules", None) or ())
    for module in list(model.modules()):
        if type(module).__name__ in blocks:
            fully_shard(module)
    fully_shard(model)
    return model
