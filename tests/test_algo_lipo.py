"""lipo: the LiPO-λ loss against a loop over the pairs in plain floats (ties in the labels and
in the rewards included), its gradient against autograd on an independent computation and a
finite difference, the weights carrying no gradient, a list of two and pair data as DPO times
1 − 1/log2(3), and training through the CLI."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from prefopt.algorithms.dpo import DPOConfig, DPOLoss
from prefopt.algorithms.lipo import (
    PAIR_WEIGHT,
    LiPOConfig,
    LiPOLoss,
    lambda_weights,
    lipo_lambda_loss,
    win_rate_labels,
)
from prefopt.api import PreferenceBatch, ResponseLists
from prefopt.testing.cli_runner import run_cli_in_process as run_cli


def labels_by_hand(quality: list[float]) -> list[float]:
    """ψ: the share of the other responses each one beats, a tie counting one half."""
    k = len(quality)
    return [
        sum(1.0 if quality[j] < quality[i] else 0.5 if quality[j] == quality[i] else 0.0
            for j in range(k) if j != i) / (k - 1)
        for i in range(k)
    ]  # fmt: skip


def weights_by_hand(rewards: list[float], quality: list[float]) -> dict[tuple[int, int], float]:
    """Δ of every pair (i better than j), positions from a sort on (−s, −q, index)."""
    k = len(rewards)
    psi = labels_by_hand(quality)
    order = sorted(range(k), key=lambda i: (-rewards[i], -quality[i], i))
    tau = {item: position + 1 for position, item in enumerate(order)}
    return {
        (i, j): abs(2 ** psi[i] - 2 ** psi[j])
        * abs(1 / math.log2(1 + tau[i]) - 1 / math.log2(1 + tau[j]))
        for i in range(k) for j in range(k) if quality[i] > quality[j]
    }  # fmt: skip


def list_loss_by_hand(rewards: list[float], quality: list[float]) -> float:
    return sum(
        delta * math.log(1 + math.exp(-(rewards[i] - rewards[j])))
        for (i, j), delta in weights_by_hand(rewards, quality).items()
    )


def list_batch(policy: torch.Tensor, reference: torch.Tensor, quality: list[float],
               offsets: list[int]) -> PreferenceBatch:  # fmt: skip
    """A batch whose pairs are each list's first-best and last-worst, with the lists."""
    pairs = []
    for start, end in zip(offsets, offsets[1:], strict=False):
        values = quality[start:end]
        pairs.append((start + values.index(max(values)), start + values.index(min(values))))
    better = torch.tensor([a for a, _ in pairs])
    worse = torch.tensor([b for _, b in pairs])
    lengths = torch.ones_like(policy, dtype=torch.long)
    return PreferenceBatch(
        policy[better], policy[worse], reference[better], reference[worse],
        lengths[better], lengths[worse],
        lists=ResponseLists(policy, reference, lengths, torch.tensor(quality),
                            torch.tensor(offsets), torch.arange(len(pairs))),
    )  # fmt: skip


# lists of 5, 3, 4 and 2: a strict ranking, a tie in the labels, ties in labels and rewards
QUALITY = [0.0, -3.0, -1.0, -4.0, -2.0, 0.0, -1.0, -1.0, -2.0, 0.0, -2.0, -1.0, 0.0, -1.0]
OFFSETS = [0, 5, 8, 12, 14]
POLICY = [0.4, -1.2, 0.9, 0.1, -0.3, 0.2, 0.5, 0.5, -0.7, 1.0, 1.0, -0.4, 0.3, 0.8]
REFERENCE = [0.1, 0.3, -0.2, 0.6, 0.0, 0.2, -0.5, -0.5, 0.1, 0.0, 0.0, 0.2, 0.4, -0.1]


def test_labels_are_win_rates() -> None:
    assert win_rate_labels(torch.tensor([2.0, 1.0, 1.0, 0.0])).tolist() == [1.0, 0.5, 0.5, 0.0]
    assert win_rate_labels(torch.tensor([5.0, 5.0, 1.0])).tolist() == [0.75, 0.75, 0.0]
    assert win_rate_labels(torch.tensor([0, -2, -1])).tolist() == [1.0, 0.0, 0.5]  # integers
    assert win_rate_labels(torch.tensor([3.0, 3.0])).tolist() == [0.5, 0.5]


def test_loss_matches_a_loop_over_the_pairs() -> None:
    beta = 0.7
    policy = torch.tensor(POLICY, dtype=torch.float64)
    reference = torch.tensor(REFERENCE, dtype=torch.float64)
    rewards = [beta * (p - r) for p, r in zip(POLICY, REFERENCE, strict=True)]
    # tied rewards: across a label tie (second list) and across different labels (third)
    assert rewards[9] == rewards[10] and rewards[6] == rewards[7]
    per_list = [list_loss_by_hand(rewards[a:b], QUALITY[a:b])
                for a, b in zip(OFFSETS, OFFSETS[1:], strict=False)]  # fmt: skip
    got = lipo_lambda_loss(beta * (policy - reference), torch.tensor(QUALITY),
                           torch.tensor(OFFSETS))  # fmt: skip
    assert got.tolist() == pytest.approx(per_list, rel=1e-12)
    loss = LiPOLoss(LiPOConfig(beta=beta))(list_batch(policy, reference, QUALITY, OFFSETS))
    assert loss.loss.item() == pytest.approx(sum(per_list) / 4, rel=1e-12)
    # per_pair shares each list's loss among its pairs (one pair per list here)
    assert loss.per_pair.tolist() == pytest.approx(per_list, rel=1e-12)


def test_weights_by_hand_for_ties_in_rewards() -> None:
    # rewards all tied: positions follow the labels (better first), then the list order
    rewards = torch.zeros(4, dtype=torch.float64)
    quality = torch.tensor([0.0, 2.0, 1.0, 2.0])
    delta = lambda_weights(rewards, quality)
    # ψ = (0, 5/6, 1/3, 5/6); τ = (4, 1, 3, 2)
    gains = [2**0 - 1, 2 ** (5 / 6) - 1, 2 ** (1 / 3) - 1, 2 ** (5 / 6) - 1]
    inverse = [1 / math.log2(5), 1.0, 1 / math.log2(4), 1 / math.log2(3)]
    for i, j in itertools.product(range(4), repeat=2):
        expected = abs(gains[i] - gains[j]) * abs(inverse[i] - inverse[j])
        assert delta[i, j].item() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert delta[1, 3].item() == 0.0  # tied labels: no weight


def test_the_loss_does_not_depend_on_the_order_of_a_list() -> None:
    rewards = torch.tensor([0.3, 0.3, -0.1, 0.3, 0.0], dtype=torch.float64)
    quality = torch.tensor([1.0, 2.0, 0.0, 2.0, 1.0])
    offsets = torch.tensor([0, 5])
    reference = lipo_lambda_loss(rewards, quality, offsets).item()
    for order in itertools.permutations(range(5)):
        index = torch.tensor(order)
        got = lipo_lambda_loss(rewards[index], quality[index], offsets).item()
        assert got == pytest.approx(reference, rel=1e-12)


def test_gradient_matches_autograd_and_a_finite_difference() -> None:
    beta = 0.7
    policy = torch.tensor(POLICY, dtype=torch.float64, requires_grad=True)
    reference = torch.tensor(REFERENCE, dtype=torch.float64)
    loss = LiPOLoss(LiPOConfig(beta=beta))(list_batch(policy, reference, QUALITY, OFFSETS)).loss
    (gradient,) = torch.autograd.grad(loss, policy)

    # independent: the weights as plain-float constants, the pair terms in torch
    independent = torch.tensor(POLICY, dtype=torch.float64, requires_grad=True)
    total = independent.new_zeros(())
    for start, end in zip(OFFSETS, OFFSETS[1:], strict=False):
        s = beta * (independent[start:end] - reference[start:end])
        weights = weights_by_hand(s.tolist(), QUALITY[start:end])
        for (i, j), delta in weights.items():
            total = total - delta * torch.log(torch.sigmoid(s[i] - s[j]))
    (expected,) = torch.autograd.grad(total / 4, independent)
    assert torch.allclose(gradient, expected, rtol=1e-12, atol=1e-15)

    # a finite difference on a list with no tied rewards (Δ is constant near the point)
    values = [0.4, -1.2, 0.9, 0.1, -0.3]
    quality, offsets = torch.tensor(QUALITY[:5]), torch.tensor([0, 5])
    point = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    (analytic,) = torch.autograd.grad(lipo_lambda_loss(point, quality, offsets).sum(), point)
    h = 1e-6
    for k in range(5):
        up, down = list(values), list(values)
        up[k] += h
        down[k] -= h
        numeric = list_loss_by_hand(up, QUALITY[:5]) - list_loss_by_hand(down, QUALITY[:5])
        assert analytic[k].item() == pytest.approx(numeric / (2 * h), rel=1e-6, abs=1e-9)


def test_the_weights_carry_no_gradient() -> None:
    rewards = torch.tensor([0.5, -0.2, 0.1], requires_grad=True)
    delta = lambda_weights(rewards, torch.tensor([2.0, 1.0, 0.0]))
    assert not delta.requires_grad and delta.grad_fn is None
    # the loss's gradient is that of Σ Δ·(−log σ(s_i − s_j)) with Δ held fixed
    loss = lipo_lambda_loss(rewards, torch.tensor([2.0, 1.0, 0.0]), torch.tensor([0, 3]))
    (gradient,) = torch.autograd.grad(loss.sum(), rewards)
    fixed = delta.clone()
    s = rewards
    expected_loss = -sum(fixed[i, j] * torch.nn.functional.logsigmoid(s[i] - s[j])
                         for i, j in ((0, 1), (0, 2), (1, 2)))  # fmt: skip
    (expected,) = torch.autograd.grad(expected_loss, rewards)
    assert torch.allclose(gradient, expected, rtol=1e-6, atol=1e-8)


def test_a_list_of_two_and_pair_data_are_dpo_times_the_pair_weight() -> None:
    assert math.isclose(PAIR_WEIGHT, 1 - math.log(2) / math.log(3), rel_tol=1e-15)
    assert math.isclose(PAIR_WEIGHT, 0.36907024642854, rel_tol=1e-12)
    torch.manual_seed(1)
    policy = torch.randn(6, dtype=torch.float64, requires_grad=True)
    reference = torch.randn(6, dtype=torch.float64)

    def batches() -> tuple[PreferenceBatch, PreferenceBatch]:
        lists = list_batch(policy, reference, [1.0, 0.0, 0.0, 1.0, 2.0, -1.0], [0, 2, 4, 6])
        as_pairs = PreferenceBatch(lists.policy_chosen_logps, lists.policy_rejected_logps,
                                   lists.reference_chosen_logps, lists.reference_rejected_logps,
                                   lists.chosen_lengths, lists.rejected_lengths)  # fmt: skip
        return lists, as_pairs

    dpo = DPOLoss(DPOConfig(beta=0.3))(batches()[1]).loss
    (dpo_gradient,) = torch.autograd.grad(dpo, policy)
    # by hand: c·(−log σ(β·m)) averaged over the three pairs (chosen, rejected by position)
    p, r = policy.tolist(), reference.tolist()
    chosen, rejected = (0, 3, 4), (1, 2, 5)
    m = [(p[c] - p[w]) - (r[c] - r[w]) for c, w in zip(chosen, rejected, strict=True)]
    by_hand = sum(PAIR_WEIGHT * math.log(1 + math.exp(-0.3 * v)) for v in m) / 3
    lipo = LiPOLoss(LiPOConfig(beta=0.3))
    for which in (0, 1):  # lists of two, then pair data (no lists)
        loss = lipo(batches()[which]).loss
        (gradient,) = torch.autograd.grad(loss, policy)
        assert loss.item() == pytest.approx(by_hand, rel=1e-12)
        assert loss.item() == pytest.approx(PAIR_WEIGHT * dpo.item(), rel=1e-12)
        assert torch.allclose(gradient, PAIR_WEIGHT * dpo_gradient, rtol=1e-12, atol=1e-15)
    # a tied list of two adds nothing
    tied = lipo_lambda_loss(torch.tensor([0.3, -0.3]), torch.zeros(2), torch.tensor([0, 2]))
    assert tied.item() == 0.0


def test_beta_must_be_positive() -> None:
    with pytest.raises(ValueError, match="beta must be > 0"):
        LiPOConfig(beta=0.0)


def test_lipo_trains_on_lists_through_the_cli(
    tiny_model: Path, ranked_lists_file: Path, tmp_path: Path
) -> None:
    lists = ranked_lists_file
    out = tmp_path / "out"
    code, _, stderr = run_cli(
        "train", "lipo", "--model", str(tiny_model), "--train-file", str(lists),
        "--output-dir", str(out), "--max-steps", "3", "--set", "training.logging_steps=1",
        "--set", "training.bf16=false", "--beta", "0.2",
    )  # fmt: skip
    assert code == 0, stderr
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [step["loss"] for step in steps if "loss" in step]
    assert len(losses) == 3 and all(math.isfinite(value) for value in losses)
    # step 0: every reward 0, positions in the ideal order, each pair term log 2
    assert losses[0] == pytest.approx(list_loss_by_hand([0.0] * 4, [0, -1, -1, -2]), rel=1e-6)
    # the loss value jumps with the policy's positions; the best-worst margin grows
    margins = [step["rewards/margins"] for step in steps if "loss" in step]
    assert margins[0] == 0.0 and margins[-1] > 0
