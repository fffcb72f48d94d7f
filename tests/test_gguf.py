"""GGUF sources: how a ``.gguf`` path is split for ``from_pretrained``, how ``model.gguf_file``
folds into one recorded path, and the one-line errors for files transformers cannot load or a
missing ``gguf`` package. (The real GGUF model end to end is in test_real_model.py.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from prefopt.api import AlgorithmSpec
from prefopt.config import model_short_name
from prefopt.config_layers import resolve_run_config
from prefopt.errors import UsageError
from prefopt.modeling import gguf as gguf_sources
from prefopt.testing.cli_runner import run_cli_in_process as run_cli

needs_gguf = pytest.mark.skipif(
    importlib.util.find_spec("gguf") is None, reason="the gguf package is not installed"
)


def test_split_local_and_hub_sources(tmp_path: Path) -> None:
    local = tmp_path / "m" / "Model.Q4_K_M.gguf"
    local.parent.mkdir()
    local.write_bytes(b"")
    assert gguf_sources.split_gguf(str(local)) == (str(local.parent), "Model.Q4_K_M.gguf")
    assert gguf_sources.split_gguf("org/repo/model.gguf") == ("org/repo", "model.gguf")
    assert gguf_sources.split_gguf("./missing/model.GGUF") == ("missing", "model.GGUF")
    assert gguf_sources.split_gguf("org/model") == ("org/model", None)
    assert gguf_sources.pretrained_arguments("org/model") == ("org/model", {})


def test_gguf_file_folds_into_one_recorded_path(tmp_path: Path) -> None:
    from dataclasses import dataclass

    @dataclass
    class Empty:
        pass

    spec = AlgorithmSpec("toy", "toy", Empty, lambda config, ctx=None: None)
    (tmp_path / "Model.Q8_0.gguf").write_bytes(b"")
    config = resolve_run_config(
        spec, sets=[f"model.name_or_path={tmp_path}", "model.gguf_file=Model.Q8_0.gguf"]
    )
    assert config.model.name_or_path == str(tmp_path / "Model.Q8_0.gguf")
    assert config.model.gguf_file is None
    assert model_short_name(config.model.name_or_path) == "Model.Q8_0"
    hub = resolve_run_config(
        spec, sets=["model.name_or_path=org/repo", "model.gguf_file=model.gguf"]
    )
    assert hub.model.name_or_path == "org/repo/model.gguf"


def test_missing_gguf_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def without_gguf(name: str, *args: object) -> object:
        return None if name == "gguf" else real_find_spec(name, *args)

    monkeypatch.setattr(gguf_sources.importlib.util, "find_spec", without_gguf)
    with pytest.raises(UsageError, match=r"pip install gguf"):
        gguf_sources.pretrained_arguments("/models/model.gguf")


def write_unsupported_gguf(path: Path) -> Path:
    """A well-formed GGUF file of an architecture transformers does not know."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "mamba9")
    writer.add_block_count(1)
    writer.add_context_length(16)
    writer.add_embedding_length(8)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@needs_gguf
def test_unloadable_gguf_files_get_one_line_and_exit_2(pairs_file: Path, tmp_path: Path) -> None:
    unsupported = write_unsupported_gguf(tmp_path / "unknown.gguf")
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(b"GGUF" + bytes(range(60)))
    for model, expected in ((unsupported, "architecture mamba9"), (damaged, "damaged.gguf")):
        out = tmp_path / f"run-{model.stem}"
        code, _, stderr = run_cli(
            "train", "dpo", "--model", str(model), "--train-file", str(pairs_file),
            "--output-dir", str(out), "-q",
        )  # fmt: skip
        assert code == 2, stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in stderr, stderr
        assert "cannot load GGUF checkpoint" in lines[0] and expected in lines[0]
        assert not out.exists()  # nothing written
