"""What the losses over whole rankings share (``dpo-pl``, ``lipo``): pair data seen as lists of
two, and the step from each list's loss to a :class:`~prefopt.api.LossOutput`.

Such a loss defines ``per_list(rewards, quality, offsets)``: each list's loss (L,) from the
implicit rewards ``β·(log π − log π_ref)`` of its responses (S,), their quality (higher is
better, equal values tied) and the lists' offsets (L + 1,). The batch's loss is the mean over
its lists; ``per_pair`` gives each of the batch's pairs (``lists.pairs``) its list's loss
shared evenly among that list's pairs, for the logs, and the rewards logged are those of the
pairs.
"""

from __future__ import annotations

from typing import Any

from prefopt.api import LossOutput, PreferenceBatch, ResponseLists


def pair_lists(batch: PreferenceBatch) -> ResponseLists:
    """Pair data as lists of two (chosen, rejected), for the same loss."""
    import torch

    size = batch.size

    def interleave(chosen: Any, rejected: Any) -> Any:
        return torch.stack([chosen, rejected], 1).flatten()

    quality = torch.tensor([1.0, 0.0], device=batch.policy_chosen_logps.device).repeat(size)
    reference = (
        None
        if batch.reference_chosen_logps is None or batch.reference_rejected_logps is None
        else interleave(batch.reference_chosen_logps, batch.reference_rejected_logps)
    )
    return ResponseLists(
        policy_logps=interleave(batch.policy_chosen_logps, batch.policy_rejected_logps),
        reference_logps=reference,
        lengths=interleave(batch.chosen_lengths, batch.rejected_lengths),
        quality=quality,
        offsets=torch.arange(0, 2 * size + 1, 2, device=quality.device),
        pair_list=torch.arange(size, device=quality.device),
    )


class WholeListLoss:
    """A loss over each list's whole ranking; subclasses define :meth:`per_list`. The config
    has ``beta``, the inverse temperature of the implicit rewards. ``whole_lists`` tells the
    run that the loss weighs no pairs (``lists.weight=gap`` is refused for it)."""

    whole_lists = True

    def __init__(self, config: Any) -> None:
        self.config = config

    def per_list(self, rewards: Any, quality: Any, offsets: Any) -> Any:
        raise NotImplementedError

    def __call__(self, batch: PreferenceBatch) -> LossOutput:
        import torch

        lists = batch.lists if batch.lists is not None else pair_lists(batch)
        beta = self.config.beta
        per_list = self.per_list(beta * lists.log_ratios(), lists.quality, lists.offsets)
        pairs_per_list = torch.bincount(lists.pair_list, minlength=lists.count).clamp(min=1)
        per_pair = (per_list / pairs_per_list)[lists.pair_list]
        return LossOutput(
            loss=per_list.mean(),
            per_pair=per_pair,
            weights=torch.ones_like(per_pair),
            metrics={},
            chosen_rewards=beta * batch.chosen_log_ratio().detach(),
            rejected_rewards=beta * batch.rejected_log_ratio().detach(),
        )
