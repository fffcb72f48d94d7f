"""Dynamic-β: DPO whose β is steered by a risk test on the margins.

The controller keeps the share of pairs whose margin exceeds a running high quantile near its
target δ: when more pairs than expected already have a large margin (the policy is pulling
away from the reference), β grows and pulls it back; when fewer do, β shrinks.

With ``M_i = m_i`` the detached DPO margin of each pair of the (global) batch, n = |M|:

- β starts at β0. During the first W training calls (``warmup_steps``) the margins are
  collected and β stays β0; at the W-th call ``τ = quantile(all collected margins, 1 − δ)``
  (linear interpolation).
- Every later call: ``q = quantile(M, 1 − δ)``; ``τ ← (1 − λ)·τ + λ·q``;
  ``p̂ = mean(M ≥ τ)``; ``u = (p̂ − δ) / sqrt(δ(1 − δ)/n)``;
  ``β ← clip(β·exp(α·tanh(γ·u)), β_min, β_max)``.
- A call's loss uses the β from before its own update: ``mean(−log σ(β·m_i))``.

Parameters: ``beta`` (β0) 0.01–0.5; ``warmup_steps`` (W) loss calls of margin collection,
50–500; ``delta`` (δ) the target share of pairs above τ, 0.05–0.2; ``lam`` (λ) the EMA rate
of τ, 0.01–0.3; ``alpha`` (α) the largest log-step of β per call, 0.001–0.05; ``gamma`` (γ) the
sharpness of the tanh on the z-score u, 1–5; ``beta_min``/``beta_max`` the clip range.

Data parallelism: margins are gathered across processes, so every process sees the same
global batch and keeps an identical controller; the loss is the local mean, and DDP's average
of equal-sized local means is the global mean. Evaluation (no grad) uses the current β and
changes no state. The controller state (β, τ, call count, warmup margins) is checkpointed.

Source: prefopt's risk-controlled variant of adaptive β, in the line of β-DPO (Wu et al.,
NeurIPS 2024, https://arxiv.org/abs/2407.08639) and adaptive KL control (Ziegler et al., 2019,
https://arxiv.org/abs/1909.08593).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import prefopt
from prefopt.algorithms.common import (
    gather_detached,
    grad_enabled,
    quantile,
    sigmoid_preference_loss,
)
from prefopt.api import SINGLE_PROCESS, AlgorithmSpec, LossContext, LossOutput, PreferenceBatch


@dataclass
class DynamicBetaConfig:
    beta: float = field(default=0.1, metadata={"help": "Initial inverse temperature β0."})
    warmup_steps: int = field(
        default=120, metadata={"help": "Loss calls W that collect margins before β moves."}
    )
    delta: float = field(
        default=0.1, metadata={"help": "Target share δ of margins above the threshold τ."}
    )
    lam: float = field(default=0.1, metadata={"help": "EMA rate λ of the threshold τ (0–1)."})
    alpha: float = field(
        default=0.005, metadata={"help": "Largest log-step α of β per call (0.001–0.05)."}
    )
    gamma: float = field(default=2.0, metadata={"help": "Sharpness γ of tanh(γ·u)."})
    beta_min: float = field(default=0.0, metadata={"help": "Lower clip of β."})
    beta_max: float = field(default=2.0, metadata={"help": "Upper clip of β."})

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.warmup_steps < 1:
            raise ValueError(f"warmup_steps must be >= 1, got {self.warmup_steps}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")
        if not 0 <= self.lam <= 1:
            raise ValueError(f"lam must be in [0, 1], got {self.lam}")
        if not 0 <= self.beta_min <= self.beta_max:
            raise ValueError(
                f"need 0 <= beta_min <= beta_max, got beta_min={self.beta_min}, "
                f"beta_max={self.beta_max}"
            )


class DynamicBetaLoss:
    """Stateful dynamic-β DPO loss; the controller state is checkpointed."""

    def __init__(self, config: DynamicBetaConfig, ctx: LossContext | None = None) -> None:
        self.config = config
        self.ctx = ctx or SINGLE_PROCESS
        self.beta = config.beta
        self.tau: float | None = None
        self.calls = 0
        self.collected: list[float] = []

    def state_dict(self) -> dict[str, Any]:
        return {
            "beta": self.beta,
            "tau": self.tau,
            "calls": self.calls,
            "collected": list(self.collected),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.beta = float(state["beta"])
        self.tau = None if state.get("tau") is None else float(state["tau"])
        self.calls = int(state.get("calls", 0))
        self.collected = [float(v) for v in state.get("collected", [])]

    @property
    def in_warmup(self) -> bool:
        return self.calls < self.config.warmup_steps

    def __call__(self, batch: PreferenceBatch) -> LossOutput:
        import torch

        margin = batch.logits_margin()
        beta = self.beta  # the β before this call's update
        metrics: dict[str, float] = {
            "beta": beta,
            "in_warmup": float(self.in_warmup),
            # the health check "beta-clamped" reads it (docs/plugins.md#metrics)
            "beta_at_clamp": float(beta in (self.config.beta_min, self.config.beta_max)),
        }
        if grad_enabled():
            metrics.update(self._update(gather_detached(self.ctx, margin)))
        if self.tau is not None:
            metrics["tau"] = self.tau
        per_pair = sigmoid_preference_loss(beta * margin)
        return LossOutput(
            loss=per_pair.mean(),
            per_pair=per_pair,
            weights=torch.ones_like(per_pair),
            metrics=metrics,
            chosen_rewards=beta * batch.chosen_log_ratio().detach(),
            rejected_rewards=beta * batch.rejected_log_ratio().detach(),
        )

    def _update(self, margins: Any) -> dict[str, float]:
        """Advance the controller by one training call; returns p̂ and u when computed."""
        cfg = self.config
        if self.in_warmup:
            self.collected.extend(float(v) for v in margins.reshape(-1).tolist())
            self.calls += 1
            if self.calls == cfg.warmup_steps:
                import torch

                pooled = torch.tensor(self.collected, dtype=torch.float64)
                self.tau = quantile(pooled, 1 - cfg.delta)
                self.collected = []
            return {}
        assert self.tau is not None
        flat = margins.reshape(-1).double().cpu()
        n = flat.numel()
        self.tau = (1 - cfg.lam) * self.tau + cfg.lam * quantile(flat, 1 - cfg.delta)
        p_hat = float((flat >= self.tau).double().mean())
        u = (p_hat - cfg.delta) / math.sqrt(cfg.delta * (1 - cfg.delta) / n)
        step = math.exp(cfg.alpha * math.tanh(cfg.gamma * u))
        self.beta = min(cfg.beta_max, max(cfg.beta_min, self.beta * step))
        self.calls += 1
        return {"p_hat": p_hat, "u": u}


def make_loss(config: DynamicBetaConfig, ctx: LossContext | None = None) -> DynamicBetaLoss:
    return DynamicBetaLoss(config, ctx)


def run_name(config: DynamicBetaConfig, model_short: str) -> str:
    return f"DynamicBetaDPO_{model_short}"


SPEC = AlgorithmSpec(
    name="dynamic-beta",
    summary="Dynamic-β DPO: β steered by a risk test on the share of large margins.",
    config_class=DynamicBetaConfig,
    make_loss=make_loss,
    run_name=run_name,
)


@prefopt.hookimpl
def prefopt_algorithms() -> list[AlgorithmSpec]:
    return [SPEC]
