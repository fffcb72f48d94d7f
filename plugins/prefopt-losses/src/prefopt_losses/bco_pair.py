"""BCO (pairwise): binary classifier optimisation with a running reward shift.

Jung et al., "Binary Classifier Optimization for Large Language Model Alignment", 2024,
https://arxiv.org/abs/2404.04656 (the BCE loss with reward shift, applied to pairs).

Chosen answers are the positive class and rejected ones the negative class of a logistic
classifier whose logit is the implicit reward ``r = β·(log π(y|x) − log π_ref(y|x))``
(log-probs summed over completion tokens), shifted by δ. Per pair::

    loss = −log σ(r_c − δ) − log σ(−(r_r − δ))

δ is the running mean of every reward seen so far in training, chosen and rejected alike;
the paper shows this shift closes the gap between the classifier loss and DPO.

- **Global batch statistics.** δ is updated with the rewards of the whole *global* batch:
  ``ctx.all_gather`` concatenates them across data-parallel processes, so every process
  holds the same δ and training matches a single-process run with the same global batch.
- **State.** δ and the count behind it are the loss's state (``state_dict`` /
  ``load_state_dict``), saved with every checkpoint and restored on ``--resume``.
- δ is updated only when gradients are enabled: evaluation (run under ``torch.no_grad``)
  reads it without moving it. The current batch is included before its loss is computed.

Parameters: ``beta`` (β) 0.01–0.5 (0.1 common); ``reward_shift`` off fixes δ = 0 (plain
pairwise BCE on the rewards). Implicit rewards: ``r_c``, ``r_r``; metric ``bco/delta``.
Shapes: inputs and ``per_pair`` are (B,); ``loss`` is a scalar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefopt.api import SINGLE_PROCESS, AlgorithmSpec, LossContext, LossOutput, PreferenceBatch

from prefopt_losses._common import check_positive, log_ratios, output


@dataclass
class BCOPairConfig:
    beta: float = field(default=0.1, metadata={"help": "Reward scale β (0.01–0.5)."})
    reward_shift: bool = field(
        default=True,
        metadata={"help": "Shift rewards by their running mean δ (off: δ = 0)."},
    )

    def __post_init__(self) -> None:
        check_positive("beta", self.beta)


def bco_pair_loss(chosen_rewards: Any, rejected_rewards: Any, delta: float) -> Any:
    """``−log σ(r_c − δ) − log σ(−(r_r − δ))`` elementwise."""
    import torch.nn.functional as F

    return -F.logsigmoid(chosen_rewards - delta) - F.logsigmoid(-(rejected_rewards - delta))


class BCOPairLoss:
    """Stateful: the running reward mean δ and the number of rewards behind it."""

    def __init__(self, config: BCOPairConfig, ctx: LossContext) -> None:
        self.config = config
        self.ctx = ctx
        self.mean = 0.0
        self.count = 0

    def update(self, rewards: Any) -> None:
        """Fold a batch of rewards (this process's; gathered across processes) into δ."""
        gathered = self.ctx.all_gather(rewards.detach().float())
        batch_count = int(gathered.numel())
        if batch_count == 0:
            return
        batch_mean = float(gathered.mean())
        total = self.count + batch_count
        self.mean += (batch_mean - self.mean) * batch_count / total
        self.count = total

    def __call__(self, batch: PreferenceBatch) -> LossOutput:
        import torch

        chosen, rejected = log_ratios(batch)
        r_c, r_r = self.config.beta * chosen, self.config.beta * rejected
        if self.config.reward_shift and torch.is_grad_enabled():
            self.update(torch.cat([r_c, r_r]))
        delta = self.mean if self.config.reward_shift else 0.0
        return output(bco_pair_loss(r_c, r_r, delta), r_c, r_r, {"bco/delta": delta})

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean = float(state["mean"])
        self.count = int(state["count"])


def make_loss(config: BCOPairConfig, ctx: LossContext | None = None) -> BCOPairLoss:
    return BCOPairLoss(config, ctx or SINGLE_PROCESS)


SPEC = AlgorithmSpec(
    name="bco-pair",
    summary="BCO (pairwise): logistic classifier on rewards shifted by their running mean.",
    config_class=BCOPairConfig,
    make_loss=make_loss,
)
