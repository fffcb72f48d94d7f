import pytest
from prefopt.testing import make_batch

from prefopt_losses.ipo import IPOConfig, make_loss

# Four pairs: policy/reference log-probs summed over completions, and completion lengths.
PC, PR = [-10.0, -12.0, -8.0, -20.0], [-11.0, -11.0, -9.0, -18.0]
RC, RR = [-10.5, -12.0, -8.2, -19.0], [-10.5, -11.5, -8.5, -18.0]
LC, LR = [2, 4, 5, 8], [3, 2, 5, 4]


def hand_margins(normalize: bool) -> list[float]:
    out = []
    for pc, pr, rc, rr, lc, lr in zip(PC, PR, RC, RR, LC, LR, strict=True):
        c, r = pc - rc, pr - rr
        out.append(c / lc - r / lr if normalize else c - r)
    return out


@pytest.mark.parametrize("normalize", [True, False])
def test_ipo_matches_hand_computed_values(normalize: bool) -> None:
    beta = 0.25  # target margin 1/(2β) = 2
    batch = make_batch(PC, PR, RC, RR, chosen_lengths=LC, rejected_lengths=LR)
    out = make_loss(IPOConfig(beta=beta, length_normalize=normalize))(batch)
    expected = [(h - 2.0) ** 2 for h in hand_margins(normalize)]
    assert out.per_pair.tolist() == pytest.approx(expected, rel=1e-12)
    assert float(out.loss) == pytest.approx(sum(expected) / 4, rel=1e-12)
    assert out.weights.tolist() == [1.0] * 4
    # Rewards are β times the (normalised) log-ratios: pair 0 with normalisation 0.25*0.5/2.
    if normalize:
        assert float(out.chosen_rewards[0]) == pytest.approx(0.0625)
        assert float(out.rejected_rewards[0]) == pytest.approx(0.25 * -0.5 / 3)


def test_ipo_at_the_reference_point_is_the_squared_target() -> None:
    # policy == reference: h = 0, loss = (1/(2·0.1))² = 25 exactly.
    batch = make_batch([-3.0], [-4.0], [-3.0], [-4.0], chosen_lengths=[3], rejected_lengths=[7])
    assert float(make_loss(IPOConfig(beta=0.1))(batch).loss) == pytest.approx(25.0)


def test_ipo_gradient_pulls_the_margin_to_the_target() -> None:
    beta = 0.25
    batch = make_batch(PC, PR, RC, RR, chosen_lengths=LC, rejected_lengths=LR, requires_grad=True)
    make_loss(IPOConfig(beta=beta))(batch).loss.backward()
    # d mean((h − 2)²)/d π_c,i = 2(h_i − 2)/|y_c,i| / B
    expected = [2 * (h - 2.0) / lc / 4 for h, lc in zip(hand_margins(True), LC, strict=True)]
    assert batch.policy_chosen_logps.grad.tolist() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("beta", [0.0, -1.0, float("inf")])
def test_ipo_rejects_bad_beta(beta: float) -> None:
    with pytest.raises(ValueError, match="beta"):
        IPOConfig(beta=beta)
