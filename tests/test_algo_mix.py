"""mix: on plain tensors the loss and gradient equal the weighted sum of the parts by hand;
metrics under each part's prefix; stateful parts keep and restore their state; the config's
text and YAML forms and its one-line errors; the composed run (reference, extra columns,
record checks); and end to end, a one-part mix ≡ that algorithm and β-DPO's state inside a
mix is checkpointed and resumed."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from prefopt.api import AlgorithmSpec, LossOutput, PreferenceBatch
from prefopt.errors import UsageError
from prefopt.registry import get_algorithm

MIX = get_algorithm("mix")
CHOSEN = [-4.0, -9.0, -2.0, -7.5]
REJECTED = [-5.0, -8.0, -6.0, -7.0]
REF_CHOSEN = [-4.5, -8.0, -3.0, -7.0]
REF_REJECTED = [-4.0, -8.5, -5.0, -7.25]
LENGTHS = [2, 3, 1, 5]
H_W, H_L = [0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 1.0, 1.0]


def _batch() -> PreferenceBatch:
    def t(values: list[float], grad: bool = False) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64, requires_grad=grad)

    return PreferenceBatch(
        t(CHOSEN, grad=True),
        t(REJECTED, grad=True),
        t(REF_CHOSEN),
        t(REF_REJECTED),
        torch.tensor(LENGTHS),
        torch.tensor([4, 4, 2, 3]),
        {"h_w": t(H_W), "h_l": t(H_L)},
    )


def _mix(*losses: object) -> object:
    return MIX.build_loss(MIX.config_class(losses=list(losses)))


def _by_hand(c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """0.8·DPO(β=0.2) + 0.5·Factual-DPO(β=0.1, Δ=3) + 1.5·NLL, written out from the formulas."""
    rc, rr = torch.tensor(REF_CHOSEN, dtype=torch.float64), torch.tensor(REF_REJECTED).double()
    margin = (c - r) - (rc - rr)
    dpo = torch.log1p(torch.exp(-0.2 * margin)).mean()
    shift = 3.0 * (torch.tensor(H_L) - torch.tensor(H_W)).double()
    factual = torch.log1p(torch.exp(-0.1 * (margin - shift))).mean()
    nll = -c.sum() / sum(LENGTHS)
    return 0.8 * dpo + 0.5 * factual + 1.5 * nll


def test_loss_and_gradient_are_the_weighted_sum_of_the_parts() -> None:
    batch = _batch()
    out = _mix("dpo=0.8:beta=0.2", {"name": "factual", "weight": 0.5, "delta": 3}, "nll=1.5")(batch)
    c = torch.tensor(CHOSEN, dtype=torch.float64, requires_grad=True)
    r = torch.tensor(REJECTED, dtype=torch.float64, requires_grad=True)
    expected = _by_hand(c, r)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-12)
    out.loss.backward()
    expected.backward()
    assert batch.policy_chosen_logps.grad.tolist() == pytest.approx(c.grad.tolist(), rel=1e-12)
    assert batch.policy_rejected_logps.grad.tolist() == pytest.approx(r.grad.tolist(), rel=1e-12)
    # the DPO part alone for the per-part metric and the rewards (the first part's)
    margin = np.array(CHOSEN) - REJECTED - (np.array(REF_CHOSEN) - REF_REJECTED)
    assert out.metrics["dpo/loss"].item() == pytest.approx(np.log1p(np.exp(-0.2 * margin)).mean())
    assert out.metrics["nll/loss"].item() == pytest.approx(-sum(CHOSEN) / sum(LENGTHS))
    assert out.metrics["factual/delta_h_fraction"] == pytest.approx(0.5)  # ns/x -> prefix/x
    assert "factual/margin_below_delta" in out.metrics
    rewards = (out.chosen_rewards - out.rejected_rewards).numpy()
    assert rewards == pytest.approx(0.2 * margin, rel=1e-12)
    per_pair_nll = -np.array(CHOSEN) / LENGTHS
    assert out.per_pair.detach().numpy()[1] == pytest.approx(
        0.8 * np.log1p(np.exp(-0.2 * margin[1]))
        + 0.5 * np.log1p(np.exp(-0.1 * margin[1]))  # pair 1 has Δh = 0
        + 1.5 * per_pair_nll[1]
    )
    assert out.weights.tolist() == [1.0] * 4


def test_one_part_with_weight_one_is_that_algorithm() -> None:
    dpo = get_algorithm("dpo")
    expected = dpo.build_loss(dpo.config_class(beta=0.3, rpo_alpha=0.5))(_batch())
    out = _mix({"name": "dpo", "beta": 0.3, "rpo_alpha": 0.5})(_batch())
    assert out.loss.item() == expected.loss.item()
    assert out.per_pair.tolist() == expected.per_pair.tolist()
    assert out.metrics["dpo/nll_loss"].item() == expected.metrics["nll_loss"].item()


def test_a_part_named_twice_gets_its_own_prefix() -> None:
    out = _mix("dpo=1:beta=0.1", "dpo=2:beta=0.5")(_batch())
    margin = np.array(CHOSEN) - REJECTED - (np.array(REF_CHOSEN) - REF_REJECTED)
    one, two = np.log1p(np.exp(-0.1 * margin)).mean(), np.log1p(np.exp(-0.5 * margin)).mean()
    assert out.metrics["dpo/loss"].item() == pytest.approx(one)
    assert out.metrics["dpo#2/loss"].item() == pytest.approx(two)
    assert out.loss.item() == pytest.approx(one + 2 * two)


def test_a_reference_free_part_gets_the_batch_without_reference() -> None:
    seen: list[object] = []

    def make_loss(config: object, ctx: object = None) -> object:
        def loss(batch: PreferenceBatch) -> LossOutput:
            seen.append(batch.reference_chosen_logps)
            per_pair = -batch.policy_chosen_logps
            return LossOutput(per_pair.mean(), per_pair, torch.ones_like(per_pair))

        return loss

    from prefopt.algorithms.mix import MixLoss, Part
    from prefopt.algorithms.nll import NLLConfig

    free = AlgorithmSpec("free", "test", NLLConfig, make_loss, needs_reference=False)
    loss_fn = MixLoss([(Part("free", free, NLLConfig(), 1.0), make_loss(None))])
    out = loss_fn(_batch())
    assert seen == [None]
    assert out.loss.item() == pytest.approx(-sum(CHOSEN) / 4)
    assert out.chosen_rewards is None  # no part reports rewards: the trainer's defaults apply


def test_stateful_parts_keep_and_restore_their_state() -> None:
    """β-DPO inside a mix: the state is under its prefix, and a mix rebuilt from a JSON round
    trip of it draws the same pairs and ends in the same state as the uninterrupted one."""
    beta_dpo = get_algorithm("beta-dpo")
    parts = ("beta-dpo=1:rho=0.5:seed=3", "nll=0.5")
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(4):
        b = _batch()
        b.policy_chosen_logps = torch.tensor(rng.normal(-5, 2, 8))
        b.policy_rejected_logps = torch.tensor(rng.normal(-5, 2, 8))
        b.reference_chosen_logps = torch.full((8,), -5.0, dtype=torch.float64)
        b.reference_rejected_logps = torch.full((8,), -5.0, dtype=torch.float64)
        b.chosen_lengths = b.rejected_lengths = torch.full((8,), 4)
        b.extras = {}
        batches.append(b)
    straight = _mix(*parts)
    alone = beta_dpo.build_loss(beta_dpo.config_class(rho=0.5, seed=3))
    outs = [straight(b) for b in batches]
    for b, out in zip(batches, outs, strict=True):  # the same draws and β as β-DPO alone
        expected = alone(b)
        assert expected.weights.sum().item() == 4  # half of each batch is dropped...
        assert out.weights.tolist() == [1.0] * 8  # ...but the NLL part trains on every pair
        nll = -b.policy_chosen_logps.sum().item() / 32  # 8 pairs of 4 tokens
        assert out.loss.item() == pytest.approx(expected.loss.item() + 0.5 * nll, rel=1e-12)
        assert out.metrics["beta-dpo/beta"] == expected.metrics["beta"]
    assert straight.state_dict() == {"beta-dpo": alone.state_dict()}

    first = _mix(*parts)
    first(batches[0])
    saved = json.loads(json.dumps(first.state_dict()))  # as the checkpoint stores it
    resumed = _mix(*parts)
    resumed.load_state_dict(saved)
    for b, out in zip(batches[1:], outs[1:], strict=True):  # the same draws: the same losses
        again = resumed(b)
        assert again.loss.item() == out.loss.item()
        assert again.metrics["beta-dpo/gap_kept_mean"] == out.metrics["beta-dpo/gap_kept_mean"]
    assert resumed.state_dict() == straight.state_dict()


def test_third_party_parts_compose() -> None:
    pytest.importorskip("prefopt_losses")
    out = _mix("bco-pair=0.2", "simpo=1")(_batch())
    bco, simpo = get_algorithm("bco-pair"), get_algorithm("simpo")
    batch = _batch()
    expected_bco = bco.build_loss(bco.config_class())(batch)
    batch.reference_chosen_logps = batch.reference_rejected_logps = None  # simpo is ref-free
    expected_simpo = simpo.build_loss(simpo.config_class())(batch)
    expected = 0.2 * expected_bco.loss.item() + expected_simpo.loss.item()
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)
    assert out.metrics["bco-pair/delta"] == expected_bco.metrics["bco/delta"]


# -- config --------------------------------------------------------------------------------
def test_config_forms_resolve_to_full_entries() -> None:
    config = MIX.config_class(
        losses=["dpo=0.8:beta=0.2", "nll", {"name": "factual", "weight": "0.5", "delta": "2"}]
    )
    assert config.losses == [
        {"name": "dpo", "weight": 0.8, "beta": 0.2, "label_smoothing": 0.0, "rpo_alpha": 0.0},
        {"name": "nll", "weight": 1.0, "reduction": "tokens"},
        {"name": "factual", "weight": 0.5, "beta": 0.1, "delta": 2.0, "label_smoothing": 0.0,
         "rpo_alpha": 0.0},
    ]  # fmt: skip
    assert MIX.config_class(losses=config.losses).losses == config.losses  # stable
    assert MIX.run_name(config, "tiny") == "Mix_dpo0.8+nll1+factual0.5_tiny"


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        ("dpoo=1", "loss 'dpoo': unknown algorithm 'dpoo'. Did you mean 'dpo'?"),
        ("dpo=-1", "loss 'dpo': weight must be a number >= 0, got '-1'"),
        ("dpo=x", "weight must be a number >= 0, got 'x'"),
        ("dpo=nan", "weight must be a number >= 0"),
        ("dpo=1:betta=3", "loss 'dpo' has no option 'betta'. Did you mean 'beta'?"),
        ("dpo=1:beta=0", "loss 'dpo': beta must be > 0"),
        ("dpo=1:beta", "expected OPTION=VALUE after ':'"),
        ("sft=1", "'sft' trains with its own trainer"),
        ("mix=1", "a mix cannot contain a mix"),
        ({"weight": 1}, "expected NAME=WEIGHT or a mapping with a name"),
    ],
)
def test_bad_parts_are_value_errors(loss: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("?", r"\?")):
        MIX.config_class(losses=[loss])


def test_cli_errors_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from prefopt.cli.main import main

    for args in (["--loss", "dpoo=1"], ["--loss", "dpo=-0.5"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "mix", *args, "--print-config"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: algorithm 'mix': loss 'dpo") and "\n" not in err
        assert "Traceback" not in err


def test_cli_losses_from_flags_and_set(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from prefopt.cli.main import main

    def resolved(*args: str) -> list[dict]:
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "mix", *args, "--print-config"])
        assert exit_info.value.code in (0, None)
        return yaml.safe_load(capsys.readouterr().out)["algorithm"]["losses"]

    flags = resolved("--loss", "dpo=0.8:beta=0.2", "--loss", "nll=1")
    assert [(p["name"], p["weight"]) for p in flags] == [("dpo", 0.8), ("nll", 1.0)]
    assert flags[0]["beta"] == 0.2
    sets = resolved("--set", "algorithm.losses=[{name: dpo, weight: 0.8, beta: 0.2}, {name: nll}]")
    assert sets == flags


def test_composed_spec_needs_what_its_parts_need(tmp_path: Path) -> None:
    from prefopt.algorithms.mix import composed_spec

    spec = composed_spec(MIX, MIX.config_class(losses=["factual=1", "dpo=1", "nll=1"]))
    assert spec.needs_reference and spec.extra_columns == ("h_w", "h_l")
    assert spec.for_config is None and spec.name == "mix(factual,dpo,nll)"
    assert spec.validate_records is not None
    with pytest.raises(UsageError, match="h_w > h_l"):  # factual's record check runs
        spec.validate_records([(1, {"h_w": 1, "h_l": 0})], "pairs.jsonl")
    free = composed_spec(MIX, MIX.config_class(losses=["nll=1"]))
    assert not free.needs_reference and free.extra_columns == () and free.validate_records is None
    with pytest.raises(UsageError, match="mix needs at least one loss"):
        composed_spec(MIX, MIX.config_class())
    with pytest.raises(UsageError, match="mix needs at least one loss"):
        MIX.build_loss(MIX.config_class())


def test_help_and_plugins_list_show_the_mixture(capsys: pytest.CaptureFixture[str]) -> None:
    from prefopt.cli.main import main

    with pytest.raises(SystemExit):
        main(["train", "mix", "--help"])
    help_text = capsys.readouterr().out
    assert "--loss" in help_text and "NAME=WEIGHT" in help_text and "--set" in help_text
    with pytest.raises(SystemExit):
        main(["plugins", "list"])
    listing = capsys.readouterr().out
    assert "│ mix " in listing and "│ nll " in listing


# -- end to end ----------------------------------------------------------------------------
SETS = [
    "training.per_device_train_batch_size=4",
    "training.logging_steps=1",
    "training.learning_rate=1e-3",
    "training.lr_scheduler_type=constant",
    "model.precision=fp32",
]


def _train(model: Path, data: Path, out: Path, algorithm: str, *args: str) -> list[dict]:
    from prefopt.cli.main import main

    sets = [item for value in SETS for item in ("--set", value)]
    with pytest.raises(SystemExit) as exit_info:
        main(["train", algorithm, "-q", "--model", str(model), "--train-file", str(data),
              "--output-dir", str(out), *sets, *args])  # fmt: skip
    assert exit_info.value.code in (0, None)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if "loss" in line]


def test_one_part_mix_trains_like_its_algorithm(
    tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    args = ["--max-steps", "3"]
    plain = _train(tiny_model, pairs_file, tmp_path / "dpo", "dpo", *args, "--beta", "0.2")
    mixed = _train(
        tiny_model, pairs_file, tmp_path / "mix", "mix", *args, "--loss", "dpo=1:beta=0.2"
    )
    assert [s["step"] for s in mixed] == [1, 2, 3]
    assert abs(plain[0]["loss"] - math.log(2)) < 1e-3
    assert plain[-1]["loss"] < plain[0]["loss"] - 1e-3  # it really trains
    for expected, got in zip(plain, mixed, strict=True):
        for key in ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen"):
            assert got[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-9), key
        assert got["dpo/loss"] == pytest.approx(expected["loss"], rel=1e-6)


def test_beta_dpo_state_in_a_mix_is_checkpointed_and_resumed(
    tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    losses = [
        "--loss",
        "beta-dpo=1:rho=0.75",
        "--loss",
        "nll=0.5",
        "--set",
        "training.save_steps=1",
    ]
    straight = _train(
        tiny_model, pairs_file, tmp_path / "straight", "mix", "--max-steps", "2", *losses
    )
    state = json.loads((tmp_path / "straight/checkpoint-2/prefopt_loss_state.json").read_text())
    assert list(state) == ["beta-dpo"] and state["beta-dpo"]["calls"] == 2
    expected_m0 = 0.9 * straight[0]["beta-dpo/gap_mean"] + 0.1 * straight[1]["beta-dpo/gap_mean"]
    assert state["beta-dpo"]["M0"] == pytest.approx(expected_m0, rel=1e-5, abs=1e-9)
    assert straight[0]["loss"] == pytest.approx(
        straight[0]["beta-dpo/loss"] + 0.5 * straight[0]["nll/loss"], rel=1e-6
    )

    # resume: the same run cut back to its first checkpoint, continued with --resume
    out = tmp_path / "resumed"
    shutil.copytree(tmp_path / "straight", out)
    for path in out.iterdir():
        if path.name != "checkpoint-1":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    (out / "metrics.jsonl").write_text(json.dumps(straight[0]) + "\n")
    resumed = _train(tiny_model, pairs_file, out, "mix", "--max-steps", "2", "--resume", *losses)
    assert [s["step"] for s in resumed] == [1, 2]
    for key in ("loss", "beta-dpo/beta", "beta-dpo/M0", "beta-dpo/keep_ratio", "nll/loss"):
        assert resumed[1][key] == pytest.approx(straight[1][key], rel=1e-6, abs=1e-9), key
    again = json.loads((out / "checkpoint-2/prefopt_loss_state.json").read_text())
    assert again["beta-dpo"]["calls"] == 2
    assert again["beta-dpo"]["M0"] == pytest.approx(state["beta-dpo"]["M0"], rel=1e-6, abs=1e-9)


def test_example_config_resolves() -> None:
    pytest.importorskip("prefopt_losses")
    from prefopt.config_layers import resolve_run_config

    example = Path(__file__).resolve().parent.parent / "examples" / "mix_qwen.yaml"
    config = resolve_run_config(MIX, example)
    assert [(p["name"], p["weight"]) for p in config.algorithm.losses] == [
        ("dpo", 0.8),
        ("bco-pair", 0.2),
        ("nll", 1.0),
    ]
    assert config.training["output_dir"] == "runs/mix_qwen"
