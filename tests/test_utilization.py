"""Model FLOPs utilisation: the FLOP count on plain numbers, the parameters the matmuls use,
the peaks, and the figures a run's summary carries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prefopt.training import utilization as compute


def test_flops_per_token_counts_forward_backward_and_the_online_reference() -> None:
    n = 1_000_000
    assert compute.flops_per_token(n, full_fine_tuning=True, online_reference=False) == 6 * n
    assert compute.flops_per_token(n, full_fine_tuning=False, online_reference=False) == 4 * n
    assert compute.flops_per_token(n, full_fine_tuning=False, online_reference=True) == 6 * n
    result = compute.utilization(
        n, tokens=1000, seconds=2.0, full_fine_tuning=True, online_reference=True,
        peak=1e10, peak_source="test",
    )  # fmt: skip
    assert result.model_flops == 8 * n * 1000
    assert result.achieved_flops_per_s == 4e9 and result.mfu == pytest.approx(0.4)
    summary = result.summary()
    assert summary["mfu"] == 0.4 and summary["peak_tflops_per_s"] == 0.01
    assert compute.describe(summary) == "compute: 0.004 TFLOP/s, 40.0% of 0.01 TFLOP/s (test)"
    unknown = compute.utilization(
        n, 1000, 2.0, full_fine_tuning=True, online_reference=0.5, peak=None, peak_source="XYZ-9"
    ).summary()
    assert unknown["model_tflops"] == 7 * n * 1000 / 1e12  # the reference online half the time
    assert unknown["mfu"] is None
    assert compute.describe(unknown).endswith("(peak unknown: XYZ-9)")


def test_matmul_parameters_leave_the_embedding_out_and_count_a_tied_head(
    tiny_model: Path,
) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    everything = sum(p.numel() for p in model.parameters())
    embedding = model.model.embed_tokens.weight.numel()
    assert compute.matmul_parameters(model) == everything - embedding
    model.lm_head.weight = model.model.embed_tokens.weight  # tied: one tensor, still a matmul
    tied_total = sum(p.numel() for p in model.parameters())
    assert compute.matmul_parameters(model) == tied_total - embedding + embedding


def test_gpu_peaks_by_name_and_a_cached_cpu_measurement(tmp_path: Path) -> None:
    assert compute.gpu_peak("NVIDIA H100 80GB HBM3", bf16=True) == 989e12
    assert compute.gpu_peak("NVIDIA H100 PCIe", bf16=True) == 756e12
    assert compute.gpu_peak("NVIDIA A100-SXM4-80GB", bf16=False) == 19.5e12
    assert compute.gpu_peak("Some Future GPU", bf16=True) is None
    first = compute.measured_cpu_peak("float32", tmp_path, size=128)
    assert first > 0
    [cached] = list((tmp_path / "peaks").glob("*.json"))
    assert json.loads(cached.read_text())["flops_per_s"] == first
    assert compute.measured_cpu_peak("float32", tmp_path, size=128) == first  # read, not run


def test_a_runs_summary_carries_its_utilization(tiny_model: Path, tmp_path: Path) -> None:
    import prefopt
    from prefopt.testing import synthetic_pairs, write_pairs

    data = write_pairs(tmp_path / "pairs.jsonl", synthetic_pairs(16))
    cache = tmp_path / "cache"
    run = prefopt.train(
        "dpo", model=tiny_model, train_file=data, output_dir=tmp_path / "run", max_steps=2,
        training={"per_device_train_batch_size": 8},
        **{"model.precision": "fp32", "reference.cache_dir": str(cache)},
    )  # fmt: skip
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    summary = json.loads(lines[-1])["summary"]
    figures = summary["utilization"]
    assert figures == run.utilization
    assert figures["peak_source"] == "measured fp32 matmul" and 0 < figures["mfu"] < 1
    seconds = summary["timing"]["train"]
    assert figures["achieved_tflops_per_s"] == pytest.approx(
        figures["model_tflops"] / seconds, rel=1e-2
    )
    # 2 steps x 8 pairs, LoRA (N counts the adapter's matrices), the reference online in the
    # first (and only) epoch: 6 N a token of prompt + chosen + rejected, the run's own tokens
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefopt.config import LoraSettings
    from prefopt.modeling.lora import apply_lora
    from prefopt.registry import get_algorithm
    from prefopt.training.pair_data import load_pairs
    from prefopt.workflows import resolve

    policy = apply_lora(AutoModelForCausalLM.from_pretrained(tiny_model), LoraSettings())
    n = compute.matmul_parameters(policy)
    spec = get_algorithm("dpo")
    config = resolve(spec, None, {"model": tiny_model, "reference.cache_dir": str(cache)})
    pairs, _ = load_pairs(
        str(data), "train", AutoTokenizer.from_pretrained(tiny_model), config, spec
    )
    tokens = sum(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    assert figures["model_tflops"] == pytest.approx(6 * n * tokens / 1e12, rel=1e-3)


def test_a_pair_needs_its_prompt_once() -> None:
    from prefopt.data.tokenize import TokenizedPair
    from prefopt.training.pair_data import PairDataset

    pairs = [TokenizedPair([1] * 10, [2] * 3, [3] * 5), TokenizedPair([1] * 4, [2], [3] * 2)]
    assert compute.mean_sequence_tokens(PairDataset(pairs)) == (18 + 7) / 2
    assert compute.mean_sequence_tokens({"input_ids": [[1, 2, 3], [4]]}) == 2


def test_a_zero3_partition_counts_as_its_whole_parameter() -> None:
    """ZeRO-3 leaves each process an empty placeholder and records the size in ``ds_numel``."""
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 6, bias=False))
    weight = model[1].weight
    weight.data = torch.empty(0)
    weight.ds_numel = 24
    assert compute.matmul_parameters(model) == 24
