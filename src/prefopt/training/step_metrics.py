"""What the trainer logs about its pairs at each step, beyond the loss: rewards, log-probs
under the policy and the reference, and the statistics the health checks read
(:mod:`prefopt.training.health`).

- ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``, ``rewards/accuracies``: the
  loss's rewards (β·log-ratio for DPO) or, for losses that define none, the log-ratios;
- ``logps/chosen``, ``logps/rejected``: summed policy log-probs of a completion;
- ``logps/ref_chosen``, ``logps/ref_rejected``: the same under the reference;
- ``logps/chosen_shift_per_token``: mean of (policy − reference) chosen log-prob / tokens,
  the per-token drift of the chosen answers (below 0: they became less likely);
- ``pairs_per_second``: training pairs per second since the previous logged step (the pairs
  of lists and conversations counted one by one);
- ``rewards/length_correlation``: Pearson correlation, over the last :data:`LENGTH_WINDOW`
  training pairs, of the per-pair reward margin with the chosen-minus-rejected length.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

from prefopt.api import LossOutput, PreferenceBatch
from prefopt.training.health import length_correlation

#: Training pairs the length correlation looks back over.
LENGTH_WINDOW = 512
#: Pairs needed before the length correlation is logged at all.
LENGTH_MIN_PAIRS = 32


def pair_metrics(
    batch: PreferenceBatch, output: LossOutput, gather: Callable[[Any], Any]
) -> tuple[dict[str, Any], Any, Any]:
    """The step's metrics (tensors or floats) and the gathered per-pair margins and length
    differences (for :class:`LengthWatch`)."""
    with torch.no_grad():
        chosen, rejected = output.chosen_rewards, output.rejected_rewards
        if chosen is None or rejected is None:
            chosen, rejected = batch.chosen_log_ratio(), batch.rejected_log_ratio()
        chosen, rejected = gather(chosen.detach().float()), gather(rejected.detach().float())
        policy_chosen = batch.policy_chosen_logps.detach().float()
        values: dict[str, Any] = {
            "rewards/chosen": chosen.mean(),
            "rewards/rejected": rejected.mean(),
            "rewards/margins": (chosen - rejected).mean(),
            "rewards/accuracies": (chosen > rejected).float().mean(),
            "logps/chosen": gather(policy_chosen).mean(),
            "logps/rejected": gather(batch.policy_rejected_logps.detach().float()).mean(),
        }
        if batch.reference_chosen_logps is not None and batch.reference_rejected_logps is not None:
            reference_chosen = batch.reference_chosen_logps.detach().float()
            tokens = batch.chosen_lengths.to(policy_chosen.dtype).clamp(min=1)
            values["logps/ref_chosen"] = gather(reference_chosen).mean()
            values["logps/ref_rejected"] = gather(
                batch.reference_rejected_logps.detach().float()
            ).mean()
            shift = (policy_chosen - reference_chosen) / tokens
            values["logps/chosen_shift_per_token"] = gather(shift).mean()
        length_gap = gather((batch.chosen_lengths - batch.rejected_lengths).float())
        values.update(output.metrics)
    return values, chosen - rejected, length_gap


class LengthWatch:
    """The last :data:`LENGTH_WINDOW` training pairs' reward margins and length differences."""

    def __init__(self) -> None:
        self.margins: deque[float] = deque(maxlen=LENGTH_WINDOW)
        self.length_gaps: deque[float] = deque(maxlen=LENGTH_WINDOW)

    def add(self, margins: Any, length_gaps: Any) -> None:
        self.margins.extend(margins.tolist())
        self.length_gaps.extend(length_gaps.tolist())

    def state_dict(self) -> dict[str, list[float]]:
        return {"margins": list(self.margins), "length_gaps": list(self.length_gaps)}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        self.margins = deque(state["margins"], maxlen=LENGTH_WINDOW)
        self.length_gaps = deque(state["length_gaps"], maxlen=LENGTH_WINDOW)

    def correlation(self) -> float | None:
        if len(self.margins) < LENGTH_MIN_PAIRS:
            return None
        return length_correlation(list(self.margins), list(self.length_gaps))


class PairsPerSecond:
    """Training pairs per second between logged steps, timed from the first training batch
    (so a reference pass at the start of training is not counted as training). The pairs are
    counted as the batches give them (:meth:`add`): a list or a conversation gives several."""

    def __init__(self) -> None:
        self._mark: float | None = None
        self._pairs = 0

    def start(self) -> None:
        """A training batch begins: the clock starts if it has not."""
        if self._mark is None:
            self._mark = time.perf_counter()
            self._pairs = 0

    def add(self, pairs: int) -> None:
        """A training batch gave ``pairs`` pairs (on every process together)."""
        self._pairs += pairs

    def rate(self) -> float | None:
        """Pairs per second since the mark (``None`` before any batch). The next training
        batch sets a new mark, so the evaluation and checkpoint that follow a logged step are
        not counted as training."""
        if self._mark is None:
            return None
        now, since, pairs = time.perf_counter(), self._mark, self._pairs
        self._mark = None
        if pairs <= 0 or now <= since:
            return None
        return pairs / (now - since)
