"""A hub id that is neither cached nor reachable fails fast with one line and an
HF_HUB_OFFLINE hint, instead of tens of seconds of retries and warnings."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from prefopt.errors import UsageError
from prefopt.testing import run_cli

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused


def test_train_with_an_unreachable_hub_fails_fast(pairs_file: Path, tmp_path: Path) -> None:
    started = time.perf_counter()
    code, _, err = run_cli(
        "train", "dpo", "--model", "nobody-prefopt/no-such-model", "--train-file",
        str(pairs_file), "--output-dir", str(tmp_path / "out"),
        env={"HF_HUB_OFFLINE": "", "HF_ENDPOINT": UNREACHABLE, "HF_HOME": str(tmp_path / "hf")},
        timeout=120,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: cannot reach the Hugging Face hub")
    assert "nobody-prefopt/no-such-model" in lines[0] and "HF_HUB_OFFLINE=1" in lines[0]
    assert seconds < 20  # interpreter and imports included; the probe itself waits <= 3 s


def test_check_hub_source_skips_local_cached_and_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from prefopt.modeling import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=2.5: False)
    monkeypatch.setattr(hub, "_hub_offline", lambda: False)
    monkeypatch.setattr(hub, "_in_hub_cache", lambda name, revision: False)
    with pytest.raises(UsageError, match="HF_HUB_OFFLINE=1"):
        hub.check_hub_source("org/model")
    hub.check_hub_source(str(tmp_path))  # a local folder needs no hub
    monkeypatch.setattr(hub, "_in_hub_cache", lambda name, revision: True)
    hub.check_hub_source("org/model")  # cached: transformers can load it without the hub
    monkeypatch.setattr(hub, "_in_hub_cache", lambda name, revision: False)
    monkeypatch.setattr(hub, "_hub_offline", lambda: True)
    hub.check_hub_source("org/model")  # offline mode: transformers fails fast on its own
    monkeypatch.setattr(hub, "_hub_offline", lambda: False)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=2.5: True)
    hub.check_hub_source("org/model")


def test_hub_reachable_is_false_for_a_refused_port(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    from prefopt.modeling.hub import hub_reachable

    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", UNREACHABLE)
    started = time.perf_counter()
    assert hub_reachable(timeout=1.0) is False
    assert time.perf_counter() - started < 2


def test_merge_and_eval_chains_fail_fast_on_an_unreachable_base(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """merge/eval resolve the adapter chain down to its base: a hub id there is checked too."""
    import json

    from prefopt.modeling import hub
    from prefopt.modeling.merge import resolve_chain

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=2.5: False)
    monkeypatch.setattr(hub, "_hub_offline", lambda: False)
    monkeypatch.setattr(hub, "_in_hub_cache", lambda name, revision: False)
    adapter = tmp_path / "run"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "org/model", "peft_type": "LORA"})
    )
    with pytest.raises(UsageError, match="HF_HUB_OFFLINE=1"):
        resolve_chain(adapter)
    monkeypatch.setattr(hub, "_in_hub_cache", lambda name, revision: True)
    assert resolve_chain(adapter) == ["org/model", str(adapter)]


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "nobody-prefopt/no-such-model", "--data", "PAIRS"],
        ["data", "convert", "nobody-prefopt/no-such-data", "-o", "OUT", "--from", "hh"],
        ["train", "dpo", "--model", "MODEL", "--train-file", "nobody-prefopt/no-such-data",
         "-o", "OUT"],
    ],
)  # fmt: skip
def test_eval_and_hub_datasets_fail_fast_too(
    command: list[str], pairs_file: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """``prefopt eval HUB_ID`` took 49 s of retries; a hub dataset 24-32 s. Now one line."""
    replace = {"PAIRS": str(pairs_file), "OUT": str(tmp_path / "out"), "MODEL": str(tiny_model)}
    args = [replace.get(word, word) for word in command]
    env = {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": UNREACHABLE, "HF_HOME": str(tmp_path / "hf")}
    code, _, err = run_cli(*args, env=env, timeout=120)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "nobody-prefopt/no-such-" in lines[0] and "HF_HUB_OFFLINE=1" in lines[0]
    assert "cannot be reached" in lines[0] or "cannot reach" in lines[0]
