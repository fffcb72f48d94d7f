"""β-DPO: DPO with a batch-level β calibrated on the data, and margin-guided data filtering.

Wu, Xie, Zhang, Wang, Wang, He, Wang, "β-DPO: Direct Preference Optimization with Dynamic β",
NeurIPS 2024, https://arxiv.org/abs/2407.08639.

Per training batch of B pairs (global batch under data parallelism), with ``gap_i = m_i``
the detached DPO margin ``(π_c − π_r) − (ref_c − ref_r)``:

1. Moving statistics, updated before filtering and including this batch. First batch:
   ``M0 = mean(gap)``, ``σ = max(std(gap), 1e-6)``; afterwards ``M0 ← μ·M0 + (1−μ)·mean(gap)``
   and ``σ ← μ·σ + (1−μ)·std(gap)`` (population std, momentum μ).
2. Weights ``w_i = exp(−½·((gap_i − M0)/(σ + 1e-6))²)``; keep ``k = max(1, ⌊B·ρ⌋)`` pairs drawn
   without replacement with probability ∝ w (pairs whose margin is an outlier are dropped).
3. ``β_batch = max(β_min, β0·(1 + α·(mean(gap over kept) − M0)))``, detached.
4. ``loss = Σ_{i kept} −log σ(β_batch·m_i) / k``.

The loss output's ``weights`` is the keep mask and ``per_pair`` holds ``−log σ(β_batch·m_i)``
for every pair. Parameters: ``beta`` (β0) 0.01–0.5, 0.1 common; ``alpha`` (α) how strongly β
follows the batch's margin, 0–1 (0.6 in the paper's runs; α = 0 and ρ = 1 give DPO);
``rho`` (ρ) the share of pairs kept, 0.5–1; ``momentum`` (μ) 0.9–0.99; ``beta_min`` the floor
that keeps β positive; ``seed`` the seed of the draw.

Data parallelism: the statistics and the draw use the gathered global batch (``ctx.all_gather``),
and every process makes the same draw (same seed, same call count, same gathered weights), then
takes its own rows with ``ctx.local_slice``. DDP averages the processes' losses, so each process
returns ``Σ_{local kept} ℓ_i · world_size / k``: the mean over processes is then exactly the
single-process loss ``Σ_{all kept} ℓ_i / k`` on the global batch.

Reproducibility: the n-th training call draws with a ``torch.Generator`` seeded from
``(seed, n)``, so a resumed run (the call count is loss state, saved with checkpoints) makes
the same draws. Evaluation (no grad) leaves the statistics alone and keeps every pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import prefopt
from prefopt.algorithms.common import gather_detached, grad_enabled, sigmoid_preference_loss
from prefopt.api import SINGLE_PROCESS, AlgorithmSpec, LossContext, LossOutput, PreferenceBatch

SIGMA_FLOOR = 1e-6
_SEED_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: distinct (seed, call) -> distinct seeds


@dataclass
class BetaDPOConfig:
    beta: float = field(default=0.1, metadata={"help": "Base inverse temperature β0 (0.01–0.5)."})
    alpha: float = field(
        default=0.6, metadata={"help": "Scaling α of β by the batch margin's deviation (0–1)."}
    )
    rho: float = field(
        default=0.8, metadata={"help": "Share ρ of each batch kept by the filter (0 < ρ ≤ 1)."}
    )
    momentum: float = field(
        default=0.9, metadata={"help": "Momentum μ of the margin mean/std averages (0.9–0.99)."}
    )
    beta_min: float = field(default=1e-3, metadata={"help": "Lower bound on the batch β."})
    seed: int = field(default=0, metadata={"help": "Seed of the pair filter's random draw."})

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if not 0 < self.rho <= 1:
            raise ValueError(f"rho must be in (0, 1], got {self.rho}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.beta_min <= 0:
            raise ValueError(f"beta_min must be > 0, got {self.beta_min}")


class BetaDPOLoss:
    """Stateful β-DPO loss; its moving statistics and call count are checkpointed."""

    def __init__(self, config: BetaDPOConfig, ctx: LossContext | None = None) -> None:
        self.config = config
        self.ctx = ctx or SINGLE_PROCESS
        self.mean: float | None = None  # M0
        self.std: float | None = None  # σ
        self.calls = 0

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"M0": self.mean, "sigma": self.std, "calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean = None if state.get("M0") is None else float(state["M0"])
        self.std = None if state.get("sigma") is None else float(state["sigma"])
        self.calls = int(state.get("calls", 0))

    # -- the loss --------------------------------------------------------------------------
    def __call__(self, batch: PreferenceBatch) -> LossOutput:
        import torch

        margin = batch.logits_margin()
        local_size = margin.shape[0]
        gap = gather_detached(self.ctx, margin).to(device="cpu", dtype=torch.float64)
        training = grad_enabled()
        if training:
            self._update_statistics(gap)
            keep = self._draw(gap)
            self.calls += 1
        else:
            keep = torch.ones_like(gap, dtype=torch.bool)
        center = self.mean if self.mean is not None else float(gap.mean())
        kept = int(keep.sum())
        gap_kept_mean = float(gap[keep].mean())
        cfg = self.config
        beta = max(cfg.beta_min, cfg.beta * (1 + cfg.alpha * (gap_kept_mean - center)))

        local_keep = self.ctx.local_slice(keep, local_size).to(margin.device)
        weights = local_keep.to(margin.dtype)
        per_pair = sigmoid_preference_loss(beta * margin)
        loss = (per_pair * weights).sum() * (self.ctx.world_size / kept)
        metrics = {
            "beta": beta,
            "beta_at_clamp": float(beta == cfg.beta_min),  # read by the health checks
            "M0": center,
            "sigma": self.std if self.std is not None else float(gap.std(unbiased=False)),
            "keep_ratio": kept / gap.numel(),
            "gap_mean": float(gap.mean()),
            "gap_kept_mean": gap_kept_mean,
        }
        return LossOutput(
            loss=loss,
            per_pair=per_pair,
            weights=weights,
            metrics=metrics,
            chosen_rewards=beta * batch.chosen_log_ratio().detach(),
            rejected_rewards=beta * batch.rejected_log_ratio().detach(),
        )

    def _update_statistics(self, gap: Any) -> None:
        mean, std = float(gap.mean()), float(gap.std(unbiased=False))
        if self.mean is None or self.std is None:
            self.mean, self.std = mean, max(std, SIGMA_FLOOR)
        else:
            mu = self.config.momentum
            self.mean = mu * self.mean + (1 - mu) * mean
            self.std = mu * self.std + (1 - mu) * std

    def selection_weights(self, gap: Any) -> Any:
        """``w_i = exp(−½·((gap_i − M0)/(σ + 1e-6))²)`` under the current statistics."""
        import torch

        assert self.mean is not None and self.std is not None
        return torch.exp(-0.5 * ((gap - self.mean) / (self.std + SIGMA_FLOOR)) ** 2)

    def _draw(self, gap: Any) -> Any:
        """Boolean keep mask over the global batch: k pairs drawn ∝ w, without replacement."""
        import torch

        size = gap.numel()
        k = max(1, math.floor(size * self.config.rho))
        keep = torch.zeros(size, dtype=torch.bool)
        if k >= size:
            keep[:] = True
            return keep
        weights = self.selection_weights(gap)
        # Far outliers underflow to 0; a floor keeps the draw defined (they stay ~never drawn).
        weights = torch.nan_to_num(weights, nan=0.0).clamp_min(1e-30)
        generator = torch.Generator(device="cpu")
        generator.manual_seed(draw_seed(self.config.seed, self.calls))
        chosen = torch.multinomial(weights, k, replacement=False, generator=generator)
        keep[chosen] = True
        return keep


def draw_seed(seed: int, call: int) -> int:
    """The generator seed of training call ``call`` (0-based) for config seed ``seed``."""
    return (seed * _SEED_MIX + call) % (2**63)


def make_loss(config: BetaDPOConfig, ctx: LossContext | None = None) -> BetaDPOLoss:
    return BetaDPOLoss(config, ctx)


def run_name(config: BetaDPOConfig, model_short: str) -> str:
    return f"BetaDPO_{model_short}"


SPEC = AlgorithmSpec(
    name="beta-dpo",
    summary="β-DPO: batch-level β from the margin statistics, with margin-guided pair filtering.",
    config_class=BetaDPOConfig,
    make_loss=make_loss,
    run_name=run_name,
)


@prefopt.hookimpl
def prefopt_algorithms() -> list[AlgorithmSpec]:
    return [SPEC]
