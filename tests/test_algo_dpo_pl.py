"""dpo-pl: the Plackett-Luce loss and its gradient against an independent computation (the
ranking's probability as a product, written out here), ties by Breslow's rule by hand, a list
of two equal to DPO, pair data as lists of two, and training through the CLI."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from prefopt.algorithms.dpo import DPOConfig, DPOLoss
from prefopt.algorithms.dpo_pl import DPOPLConfig, DPOPLLoss, plackett_luce_nll
from prefopt.api import PreferenceBatch, ResponseLists
from prefopt.testing.cli_runner import run_cli_in_process as run_cli


def ranking_probability(rewards: list[float], order: list[int]) -> float:
    """P(order) under Plackett-Luce: pick the best of what is left, one at a time."""
    left = list(order)
    probability = 1.0
    for item in order:
        probability *= math.exp(rewards[item]) / sum(math.exp(rewards[j]) for j in left)
        left.remove(item)
    return probability


def list_batch(policy: torch.Tensor, reference: torch.Tensor, quality: list[float],
               offsets: list[int]) -> PreferenceBatch:  # fmt: skip
    """A batch whose pairs are each list's best-worst, with the whole lists attached."""
    pairs = []
    for start, end in zip(offsets, offsets[1:], strict=False):
        values = quality[start:end]
        best = start + max(range(len(values)), key=lambda i: values[i])
        worst = start + min(range(len(values)), key=lambda i: values[i])
        pairs.append((best, worst))
    better = torch.tensor([a for a, _ in pairs])
    worse = torch.tensor([b for _, b in pairs])
    lengths = torch.ones_like(policy, dtype=torch.long)
    return PreferenceBatch(
        policy[better], policy[worse], reference[better], reference[worse],
        lengths[better], lengths[worse],
        lists=ResponseLists(policy, reference, lengths, torch.tensor(quality),
                            torch.tensor(offsets), torch.arange(len(pairs))),
    )  # fmt: skip


def test_loss_and_gradient_match_the_ranking_probability() -> None:
    torch.manual_seed(0)
    beta = 0.5
    policy = torch.randn(7, dtype=torch.float64, requires_grad=True)
    reference = torch.randn(7, dtype=torch.float64)
    quality = [0.3, 2.0, -1.0, 0.9, 5.0, 1.0, 3.0]  # list 1: 4 responses; list 2: 3
    offsets = [0, 4, 7]
    loss = DPOPLLoss(DPOPLConfig(beta=beta))(list_batch(policy, reference, quality, offsets)).loss
    (gradient,) = torch.autograd.grad(loss, policy)

    independent = torch.tensor(policy.detach().tolist(), dtype=torch.float64, requires_grad=True)

    def expected_loss(values: torch.Tensor) -> torch.Tensor:
        total = values.new_zeros(())
        for start, end in ((0, 4), (4, 7)):
            rewards = beta * (values[start:end] - reference[start:end])
            order = sorted(range(end - start), key=lambda i: -quality[start + i])
            left = list(order)
            for item in order[:-1]:
                total = total - (rewards[item] - torch.log(torch.exp(rewards[left]).sum()))
                left.remove(item)
        return total / 2

    expected = expected_loss(independent)
    (expected_gradient,) = torch.autograd.grad(expected, independent)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    assert torch.allclose(gradient, expected_gradient, rtol=1e-10, atol=1e-12)
    # and the loss is −log P(ranking) averaged over the lists, P as a product of choices
    rewards = (beta * (policy - reference)).tolist()
    probabilities = [
        ranking_probability(rewards[0:4], [1, 3, 0, 2]),
        ranking_probability(rewards[4:7], [0, 2, 1]),
    ]
    assert loss.item() == pytest.approx(-sum(map(math.log, probabilities)) / 2, rel=1e-10)


def test_the_probabilities_of_all_rankings_sum_to_one() -> None:
    rewards = [0.2, -1.3, 0.7, 0.1]
    total = sum(ranking_probability(rewards, list(order))
                for order in itertools.permutations(range(4)))  # fmt: skip
    assert total == pytest.approx(1.0, rel=1e-12)
    for order in itertools.permutations(range(4)):
        quality = torch.tensor([-float(order.index(i)) for i in range(4)])
        nll = plackett_luce_nll(torch.tensor(rewards), quality, torch.tensor([0, 4]))
        assert nll.item() == pytest.approx(-math.log(ranking_probability(rewards, list(order))))


def test_ties_follow_breslow_by_hand() -> None:
    r = torch.tensor([0.5, -0.2, 0.3, 1.1])
    quality = torch.tensor([2.0, 1.0, 1.0, 0.0])  # responses 1 and 2 tied
    nll = plackett_luce_nll(r, quality, torch.tensor([0, 4])).item()
    expected = -(
        (0.5 - math.log(sum(math.exp(v) for v in (0.5, -0.2, 0.3, 1.1))))
        + (-0.2 - math.log(sum(math.exp(v) for v in (-0.2, 0.3, 1.1))))
        + (0.3 - math.log(sum(math.exp(v) for v in (-0.2, 0.3, 1.1))))
    )  # the last response, better than none, adds no term
    assert nll == pytest.approx(expected, rel=1e-6)
    all_tied = plackett_luce_nll(r, torch.zeros(4), torch.tensor([0, 4]))
    assert all_tied.item() == 0.0


def test_a_list_of_two_is_dpo_and_pairs_are_lists_of_two() -> None:
    torch.manual_seed(1)
    policy = torch.randn(6, dtype=torch.float64)
    reference = torch.randn(6, dtype=torch.float64)
    lists = list_batch(policy, reference, [1.0, 0.0, 0.0, 1.0, 2.0, -1.0], [0, 2, 4, 6])
    dpo = DPOLoss(DPOConfig(beta=0.1))
    as_pairs = PreferenceBatch(lists.policy_chosen_logps, lists.policy_rejected_logps,
                               lists.reference_chosen_logps, lists.reference_rejected_logps,
                               lists.chosen_lengths, lists.rejected_lengths)  # fmt: skip
    expected = dpo(as_pairs).loss
    pl = DPOPLLoss(DPOPLConfig(beta=0.1))
    assert pl(lists).loss.item() == pytest.approx(expected.item(), rel=1e-12)
    assert pl(as_pairs).loss.item() == pytest.approx(expected.item(), rel=1e-12)  # no lists


def test_beta_must_be_positive() -> None:
    with pytest.raises(ValueError, match="beta must be > 0"):
        DPOPLConfig(beta=0.0)


def test_dpo_pl_trains_on_lists_through_the_cli(
    tiny_model: Path, ranked_lists_file: Path, tmp_path: Path
) -> None:
    lists = ranked_lists_file
    out = tmp_path / "out"
    code, _, stderr = run_cli(
        "train", "dpo-pl", "--model", str(tiny_model), "--train-file", str(lists),
        "--output-dir", str(out), "--max-steps", "3", "--set", "training.logging_steps=1",
        "--set", "training.bf16=false", "--beta", "0.2",
    )  # fmt: skip
    assert code == 0, stderr
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [step["loss"] for step in steps if "loss" in step]
    # step 0: every reward 0, so the ranking [1, 2=2, 4] has Breslow NLL log 4 + 2·log 3
    assert losses[0] == pytest.approx(math.log(4) + 2 * math.log(3), rel=1e-6)
    assert losses[-1] < losses[0]
