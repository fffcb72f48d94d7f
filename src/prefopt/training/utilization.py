"""Model FLOPs utilisation (MFU): the model FLOP/s a run achieved, as a share of the device's
peak. This is the physical limit the speed figures are measured against (nanoGPT and PaLM
report training speed the same way).

Model FLOPs count the work the model needs, not what the kernels did: a matmul of ``N``
weights costs ``2N`` FLOPs per token forward. A pair needs its prompt once and both completions
(the prefix-shared layout computes exactly that; the padded layout computes the prompt twice,
work this count does not credit). Per token of prompt + chosen + rejected:

    policy forward              2 N
    policy backward             4 N   full fine-tuning (gradients of inputs and weights)
                                2 N   LoRA (gradients of inputs only; the adapter's are tiny)
    online reference forward    2 N   for the share of batches whose reference ran in the
                                      step (not read from the cache)

``N`` is the model's parameter count without the embedding table (a lookup, no matmul), with
the LM head and a LoRA adapter's matrices. Attention's own ``T²`` term is left out: for the
sequence lengths prefopt trains on it is a few percent, and leaving it out errs low.

The peak: on a GPU, a table of dense bf16/fp16 (and fp32) tensor-core peaks by device name; on
a CPU, a square matmul in the run's dtype measured once and cached (per CPU model, threads,
torch version and dtype) in prefopt's cache folder.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Dense peak TFLOP/s by GPU name fragment: (bf16/fp16 tensor cores, fp32); the first match
#: in order wins. Vendor datasheet figures, without sparsity.
GPU_PEAKS: tuple[tuple[str, float, float], ...] = (
    ("H200", 989.0, 67.0),
    ("H100 PCIe", 756.0, 51.0),
    ("H100", 989.0, 67.0),
    ("B200", 2250.0, 80.0),
    ("A100", 312.0, 19.5),
    ("L40S", 362.0, 91.6),
    ("L4", 121.0, 30.3),
    ("A10G", 70.0, 31.2),
    ("A10", 125.0, 31.2),
    ("RTX 4090", 165.0, 82.6),
    ("RTX 3090", 71.0, 35.6),
    ("V100", 125.0, 15.7),
    ("T4", 65.0, 8.1),
)
PEAK_CACHE_VERSION = 1


@dataclass
class Utilization:
    """What :func:`utilization` found: the run's model FLOPs, the achieved and peak FLOP/s,
    and their ratio (``None`` where the peak is unknown)."""

    model_flops: float
    achieved_flops_per_s: float
    peak_flops_per_s: float | None
    peak_source: str

    @property
    def mfu(self) -> float | None:
        if not self.peak_flops_per_s:
            return None
        return self.achieved_flops_per_s / self.peak_flops_per_s

    def summary(self) -> dict[str, Any]:
        """The ``metrics.jsonl`` summary entries."""
        peak = self.peak_flops_per_s
        mfu = self.mfu
        return {
            "model_tflops": _figure(self.model_flops / 1e12),
            "achieved_tflops_per_s": _figure(self.achieved_flops_per_s / 1e12),
            "peak_tflops_per_s": None if peak is None else _figure(peak / 1e12),
            "peak_source": self.peak_source,
            "mfu": None if mfu is None else _figure(mfu),
        }


def _figure(value: float) -> float:
    """``value`` to 6 significant digits (a summary holds no float noise)."""
    return float(f"{value:.6g}")


def describe(summary: dict[str, Any]) -> str:
    """One line from :meth:`Utilization.summary`: ``compute: 0.41 TFLOP/s, 12.3% of 3.3
    TFLOP/s (measured bf16 matmul)``."""
    achieved = f"compute: {summary['achieved_tflops_per_s']:.3g} TFLOP/s"
    if summary.get("mfu") is None:
        return f"{achieved} (peak unknown: {summary['peak_source']})"
    share, peak = 100 * summary["mfu"], summary["peak_tflops_per_s"]
    return f"{achieved}, {share:.1f}% of {peak:.3g} TFLOP/s ({summary['peak_source']})"


def mean_sequence_tokens(dataset: Any) -> float:
    """Tokens one example needs the model for: its tokens in one row (a pair's prompt once,
    then chosen and rejected; a list's prompt and responses; a conversation and its rejected
    branches: :func:`prefopt.data.samples.sample_length`), the ``input_ids`` of an SFT
    example."""
    lengths = getattr(dataset, "lengths", None)
    sizes = lengths if lengths is not None else [len(ids) for ids in dataset["input_ids"]]
    return sum(sizes) / max(1, len(sizes))


def matmul_parameters(model: Any) -> int:
    """``N``: the parameters of the model's matmuls, the embedding table left out (the LM head
    counted, also when it is tied to the embedding)."""
    from prefopt.modeling.logprobs import embedding_parameter_ids, unwrap

    inner = unwrap(model)  # through DDP/DeepSpeed and PEFT (whose LoRA layers stay counted)
    embeddings = embedding_parameter_ids(inner)
    total = sum(_numel(p) for p in inner.parameters() if id(p) not in embeddings)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if head is not None and id(head.weight) in embeddings:  # tied: still a matmul per token
        total += _numel(head.weight)
    return int(total)


def _numel(parameter: Any) -> int:
    """A parameter's size, also when ZeRO-3 holds only this process's partition of it."""
    return int(getattr(parameter, "ds_numel", parameter.numel()))


def flops_per_token(
    parameters: int, full_fine_tuning: bool, online_reference: float | bool
) -> float:
    """Model FLOPs per sequence token of one training step (see the module docstring);
    ``online_reference`` is the share of the batches whose reference ran online (0 to 1)."""
    backward = 4 if full_fine_tuning else 2
    return float(parameters) * (2 + backward + 2 * float(online_reference))


def gpu_peak(name: str, bf16: bool) -> float | None:
    """Dense peak FLOP/s of a GPU named ``name`` from :data:`GPU_PEAKS`, or ``None``."""
    for fragment, half, single in GPU_PEAKS:
        if fragment.lower() in name.lower():
            return (half if bf16 else single) * 1e12
    return None


def measured_cpu_peak(dtype_name: str, cache_folder: Path | None, size: int = 1024) -> float:
    """FLOP/s of a ``size``² matmul in ``dtype_name`` on this CPU with torch's current threads,
    the best of a few repeats; measured once and cached."""
    import torch

    key = {
        "version": PEAK_CACHE_VERSION,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "dtype": dtype_name,
        "size": size,
    }
    path = None
    if cache_folder is not None:
        name = "-".join(str(value) for value in key.values()).replace("/", "_").replace(" ", "_")
        path = cache_folder / "peaks" / f"{name}.json"
        if path.is_file():
            try:
                return float(json.loads(path.read_text(encoding="utf-8"))["flops_per_s"])
            except (OSError, ValueError, KeyError):
                pass
    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    a @ b  # warm up the kernels
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    flops = 2 * size**3 / best
    if path is not None:
        try:
            from prefopt.data.prep_cache import atomic_write_bytes

            atomic_write_bytes(path, json.dumps({**key, "flops_per_s": flops}).encode())
        except OSError:
            pass
    return flops


def device_peak(device: Any, bf16: bool, cache_folder: Path | None) -> tuple[float | None, str]:
    """The peak FLOP/s for the run's device and precision, and where the figure comes from."""
    import torch

    dtype_name = "bfloat16" if bf16 else "float32"
    if getattr(device, "type", str(device)) == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = gpu_peak(name, bf16)
        source = f"{name}, datasheet {'bf16' if bf16 else 'fp32'}"
        return peak, source if peak is not None else f"{name} not in the table"
    peak = measured_cpu_peak(dtype_name, cache_folder)
    return peak, f"measured {'bf16' if bf16 else 'fp32'} matmul"


def utilization(
    parameters: int,
    tokens: float,
    seconds: float,
    *,
    full_fine_tuning: bool,
    online_reference: float | bool,
    peak: float | None,
    peak_source: str,
) -> Utilization:
    """The run's :class:`Utilization` from ``tokens`` trained on in ``seconds``."""
    flops = flops_per_token(parameters, full_fine_tuning, online_reference) * tokens
    achieved = flops / seconds if seconds > 0 else 0.0
    return Utilization(flops, achieved, peak, peak_source)
