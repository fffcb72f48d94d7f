"""``prefopt plugins list|show`` and a CLI that keeps working beside broken plugins.

The four broken-plugin cases are installed as fake distributions in one folder on the
subprocess's ``PYTHONPATH``: a package failing at import, one returning a non-spec, one
reusing the name ``dpo``, one written for plugin API 99.
"""

from __future__ import annotations

import os

import pytest

from prefopt.api import PLUGIN_API_VERSION
from prefopt.testing import run_cli, write_distribution

CONFIG = """
from dataclasses import dataclass, field
import prefopt
from prefopt.api import AlgorithmSpec

@dataclass
class Config:
    beta: float = field(default=0.1, metadata={"help": "β"})

def make_loss(config, ctx=None):
    raise AssertionError("never trained")
"""

BROKEN = {
    # package: (module, source, expected problem on stderr)
    "broken-import": (
        "fakecli_import",
        "import frobnicate_library_that_is_not_installed\n",
        "failed to import fakecli_import: ModuleNotFoundError: No module named "
        "'frobnicate_library_that_is_not_installed'",
    ),
    "broken-spec": (
        "fakecli_spec",
        "import prefopt\n\n@prefopt.hookimpl\ndef prefopt_algorithms():\n"
        "    return ['not a spec']\n",
        "returned str instead of prefopt.api.AlgorithmSpec",
    ),
    "broken-dpo": (
        "fakecli_dpo",
        CONFIG + "\n@prefopt.hookimpl\ndef prefopt_algorithms():\n"
        "    return [AlgorithmSpec('dpo', 'An impostor.', Config, make_loss)]\n",
        "algorithm name 'dpo' is already taken by package prefopt; ignored",
    ),
    "broken-api": (
        "fakecli_api",
        CONFIG + 'PREFOPT_PLUGIN_API = "99"\n\n@prefopt.hookimpl\ndef prefopt_algorithms():\n'
        "    return [AlgorithmSpec('from-the-future', 'Needs API 99.', Config, make_loss)]\n",
        f"written for plugin API 99, but this prefopt provides {PLUGIN_API_VERSION}; refused",
    ),
}


@pytest.fixture(scope="module")
def broken_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    site = tmp_path_factory.mktemp("broken-site")
    for package, (module, source, _) in BROKEN.items():
        write_distribution(site, package, "2.0", {package: module}, {f"{module}.py": source})
    return {"PYTHONPATH": str(site)}


def test_plugins_list_shows_broken_plugins_and_warns_per_package(broken_env) -> None:
    code, stdout, stderr = run_cli("plugins", "list", env=broken_env)
    assert code == 0, stderr
    warnings = [line for line in stderr.splitlines() if line.startswith("warning: plugin")]
    for package, (_, _, problem) in BROKEN.items():
        [line] = [w for w in warnings if f"(package {package} 2.0)" in w]
        assert problem in line
    assert "broken plugins" in stdout
    for package in BROKEN:
        assert f"{package} 2.0" in stdout
    # the healthy built-in is listed once, from prefopt
    [dpo_row] = [line for line in stdout.splitlines() if line.startswith("│ dpo ")]
    assert "prefopt" in dpo_row and "impostor" not in stdout


def test_train_help_still_works_beside_broken_plugins(broken_env) -> None:
    code, stdout, stderr = run_cli("train", "dpo", "--help", env=broken_env)
    assert code == 0, stderr
    assert "--beta" in stdout and "--label-smoothing" in stdout
    assert "broken-import" in stderr  # the warning, not a crash


def test_training_a_refused_algorithm_is_a_usage_error(broken_env) -> None:
    code, _, stderr = run_cli("train", "from-the-future", "--help", env=broken_env)
    assert code == 2
    assert "error: unknown algorithm 'from-the-future'" in stderr
    code, _, stderr = run_cli("train", "broken-api", env=broken_env)
    assert code == 2
    assert "error: algorithm 'broken-api' is unavailable: plugin 'broken-api'" in stderr
    assert "written for plugin API 99" in stderr.splitlines()[-1]


def test_plugins_show_a_broken_plugin(broken_env) -> None:
    code, stdout, stderr = run_cli("plugins", "show", "broken-import", env=broken_env)
    assert code == 0, stderr
    assert "plugin broken-import (broken)" in stdout
    assert "package      broken-import 2.0" in stdout
    assert "problem      failed to import fakecli_import" in stdout


def test_plugins_show_an_algorithm() -> None:
    code, stdout, stderr = run_cli("plugins", "show", "dpo")
    assert code == 0, stderr
    assert stdout.startswith("dpo: Direct Preference Optimization")
    assert "prefopt 0.1.0" in stdout and "dpo = prefopt.algorithms.dpo" in stdout
    assert "needed (reference log-probs are computed)" in stdout
    rows = {line.split("│")[1].strip(): line for line in stdout.splitlines() if "│ --" in line}
    beta = [cell.strip() for cell in rows["beta"].split("│")[1:-1]]
    assert beta == ["beta", "--beta", "float", "0.1", "Inverse temperature β (0.01–0.5)."]
    smoothing = [cell.strip() for cell in rows["label_smoothing"].split("│")[1:-1]]
    assert smoothing[:4] == ["label_smoothing", "--label-smoothing", "float", "0.0"]
    assert "https://arxiv.org/abs/2305.18290" in stdout  # the module docstring follows


def test_plugins_show_unknown_name() -> None:
    code, stdout, stderr = run_cli("plugins", "show", "dpx")
    assert code == 2 and stdout == ""
    assert stderr.startswith("error: no algorithm or plugin named 'dpx'. Did you mean 'dpo'?")


def test_config_fields_lists_flags_as_train_names_them() -> None:
    from dataclasses import dataclass, field

    from prefopt.cli.plugins import config_fields

    @dataclass
    class Config:
        output_dir: str = field(default="x", metadata={"help": "clashes with --output-dir"})
        use_norm: bool = True
        weights: list[float] = field(default_factory=lambda: [1.0, 2.0])
        limit: int | None = None

    assert config_fields(Config) == [
        ("output_dir", "--algo-output-dir", "str", "'x'", "clashes with --output-dir"),
        ("use_norm", "--use-norm/--no-use-norm", "bool", "True", ""),
        ("weights", "--weights", "list[float]", "[1.0, 2.0]", ""),
        ("limit", "--limit", "int | None", "None", ""),
    ]


def test_generated_flags_match_what_show_prints() -> None:
    # `prefopt train dpo --print-config` accepts exactly the flag `plugins show` names.
    code, stdout, stderr = run_cli("train", "dpo", "--label-smoothing", "0.2", "--print-config")
    assert code == 0, stderr
    assert "label_smoothing: 0.2" in stdout


KINDS_PLUGIN = """
import prefopt
from prefopt.data.converters import ConverterSpec
from prefopt.eval.judges import JudgeSpec


def convert(row, options):
    return {"prompt": row["q"], "chosen": row["good"], "rejected": row["bad"]}


@prefopt.hookimpl
def prefopt_converters():
    return [ConverterSpec("qa-triples", "q/good/bad rows from the test plugin", convert)]


@prefopt.hookimpl
def prefopt_judges():
    return [JudgeSpec("always-five", "rates every answer 5", lambda options: None)]
"""


def test_plugins_list_shows_converters_and_judges_with_their_package(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    site = tmp_path_factory.mktemp("kinds-site")
    write_distribution(
        site,
        "prefopt-qa-kit",
        "3.1",
        {"qa-kit": "qa_kit_plugin"},
        {"qa_kit_plugin.py": KINDS_PLUGIN},
    )
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    code, stdout, stderr = run_cli("plugins", "list", env={"PYTHONPATH": path})
    assert code == 0, stderr
    rows = {
        line.split("│")[1].strip(): line for line in stdout.splitlines() if line.startswith("│")
    }
    assert "prefopt-qa-kit" in rows["qa-triples"] and "3.1" in rows["qa-triples"]
    assert "q/good/bad rows" in rows["qa-triples"]
    assert "prefopt-qa-kit" in rows["always-five"]
    for builtin in ("hh", "ultrafeedback", "openai"):
        assert "│ prefopt " in rows[builtin]
    assert "data converters (prefopt data convert --from NAME)" in stdout
    assert "judges (prefopt eval judge --judge NAME)" in stdout
