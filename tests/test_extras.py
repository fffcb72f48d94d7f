"""Optional dependencies: a feature whose package is missing says which extra installs it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from prefopt import extras
from prefopt.errors import UsageError


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch):
    """Make the named modules look uninstalled to prefopt's checks."""
    real_find_spec = importlib.util.find_spec
    missing: set[str] = set()

    def find_spec(name: str, *args: object) -> object:
        return None if name in missing else real_find_spec(name, *args)

    monkeypatch.setattr(extras.importlib.util, "find_spec", find_spec)
    return missing.update


def test_require_names_the_extra(without) -> None:
    without({"matplotlib"})
    with pytest.raises(UsageError) as caught:
        extras.require("matplotlib", "plot", "a chart (--plot)")
    assert str(caught.value) == (
        "a chart (--plot) needs the 'matplotlib' package: pip install 'prefopt[plot]' "
        "(or pip install matplotlib)"
    )
    extras.require("yaml", "none", "reading YAML")  # installed: nothing happens


def test_plot_without_matplotlib(without, tmp_path: Path) -> None:
    from prefopt.eval.compare import plot

    without({"matplotlib"})
    with pytest.raises(UsageError, match=r"prefopt\[plot\]"):
        plot([], ["accuracy"], None, tmp_path / "chart.png")
    assert not (tmp_path / "chart.png").exists()


def test_wandb_by_name_needs_it_and_all_means_the_installed_ones(without) -> None:
    from prefopt.training.wandb_setup import check_wandb_installed, reports_to_wandb

    without({"wandb"})
    assert reports_to_wandb(["wandb"]) and not reports_to_wandb("all")
    check_wandb_installed("all")  # nothing installed to report to: fine
    check_wandb_installed("none")
    with pytest.raises(UsageError, match=r"prefopt\[wandb\]"):
        check_wandb_installed(["wandb"])


def test_4bit_without_bitsandbytes(without) -> None:
    from prefopt.config import ModelConfig
    from prefopt.modeling.loading import quantization_kwargs

    without({"bitsandbytes"})
    with pytest.raises(UsageError, match=r"prefopt\[qlora\]"):
        quantization_kwargs(ModelConfig(load_in_4bit=True))
