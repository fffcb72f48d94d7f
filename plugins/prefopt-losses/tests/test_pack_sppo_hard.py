import pytest
from prefopt.testing import make_batch

from prefopt_losses.sppo_hard import SPPOHardConfig, make_loss


def test_sppo_hard_matches_hand_computed_values() -> None:
    # β = 0.25: targets +2 for the chosen log-ratio, −2 for the rejected one.
    chosen_ratio, rejected_ratio = [0.0, 2.0, 3.0], [0.0, -2.0, 1.0]
    batch = make_batch(
        [c - 4 for c in chosen_ratio], [r - 6 for r in rejected_ratio], [-4.0] * 3, [-6.0] * 3
    )
    out = make_loss(SPPOHardConfig(beta=0.25))(batch)
    # (0−2)²+(0+2)² = 8; both on target = 0; (3−2)²+(1+2)² = 10
    assert out.per_pair.tolist() == pytest.approx([8.0, 0.0, 10.0])
    assert float(out.loss) == pytest.approx(6.0)
    assert out.chosen_rewards.tolist() == pytest.approx([0.0, 0.5, 0.75])


def test_sppo_hard_default_targets() -> None:
    # β = 0.1 at the reference point: 2·(1/(2·0.1))² = 50
    out = make_loss(SPPOHardConfig())(make_batch([-1.0], [-2.0], [-1.0], [-2.0]))
    assert float(out.loss) == pytest.approx(50.0)
