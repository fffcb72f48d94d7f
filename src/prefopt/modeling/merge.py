"""Merge a LoRA adapter into its base and save one self-contained model folder.

The base is always loaded in full precision (fp32), also when the adapter was trained on a
4-bit base (QLoRA): merging into quantized weights would round the adapter's update away.
The merged weights are then cast to the requested dtype and saved as safetensors, with the
tokenizer, a model card (``README.md``) and ``prefopt_merge.json`` (what was merged into what;
``prefopt eval`` reads it to find the default reference model).

Chains are followed: a run whose base is itself an adapter folder (SFT, then DPO on the SFT
adapter) is merged base-first, each adapter folded in turn. The base of an adapter folder is
the ``model.name_or_path`` of the run that produced it (``prefopt_config.yaml``); the
``base_model_name_or_path`` in ``adapter_config.json`` is only a fallback, because for a chained
run PEFT records the innermost base there, not the SFT adapter the run started from.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from prefopt.errors import UsageError
from prefopt.modeling.gguf import drop_gguf_marker, is_gguf, pretrained_arguments, split_gguf
from prefopt.modeling.hub import check_hub_source
from prefopt.modeling.model_cards import model_card
from prefopt.paths import as_if_created

ADAPTER_CONFIG = "adapter_config.json"
RUN_CONFIG = "prefopt_config.yaml"
MERGE_RECORD = "prefopt_merge.json"
_MAX_CHAIN = 8
_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class MergeResult:
    output_dir: Path
    base: str
    chain: list[str]
    dtype: str
    parameters: int


def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def read_run_config(folder: str | Path) -> dict[str, Any] | None:
    """The resolved config of the run that wrote ``folder`` (``prefopt_config.yaml``), if any."""
    path = Path(folder) / RUN_CONFIG
    if not path.is_file():
        return None
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: invalid YAML ({exc})") from None
    return loaded if isinstance(loaded, dict) else None


def read_merge_record(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / MERGE_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: invalid JSON ({exc.msg})") from None
    return record if isinstance(record, dict) else None


def adapter_parent(adapter_dir: str | Path) -> str:
    """The model an adapter folder was trained on: the run's ``model.name_or_path`` when the
    folder holds a ``prefopt_config.yaml``, else ``base_model_name_or_path``."""
    adapter_dir = Path(adapter_dir)
    run = read_run_config(adapter_dir) or {}
    base = (run.get("model") or {}).get("name_or_path")
    if not base:
        config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        base = config.get("base_model_name_or_path")
    if not base:
        raise UsageError(f"{adapter_dir}: the adapter records no base model; pass --base")
    return _existing_or_hub(str(base), adapter_dir)


def _existing_or_hub(name: str, relative_to: Path) -> str:
    """A base path as recorded; a relative path that no longer resolves from the current
    folder is tried relative to the adapter folder; anything else is taken as a hub id."""
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    beside = relative_to / name
    if not path.is_absolute() and beside.exists():
        return str(beside)
    hub_path = split_gguf(name)[0] if is_gguf(name) else name
    if path.is_absolute() or name.startswith((".", "~")) or hub_path.count("/") > 1:
        raise UsageError(
            f"{relative_to}: base model '{name}' does not exist; pass --base with its location"
        )
    return name


def resolve_chain(source: str | Path, base: str | None = None) -> list[str]:
    """``[root model, adapter, ..., source]``: the models to load and fold in, in order.

    ``base`` replaces the recorded base of ``source`` (and is followed further if it is
    itself an adapter folder).
    """
    chain = [str(source)]
    current = base or adapter_parent(source)
    while True:
        if current in chain:
            raise UsageError(f"adapter chain loops back to {current}")
        chain.append(current)
        if not is_adapter_folder(current):
            break
        if len(chain) > _MAX_CHAIN:
            raise UsageError(f"adapter chain deeper than {_MAX_CHAIN}: {' -> '.join(chain)}")
        current = adapter_parent(current)
    root = chain[-1]
    if not Path(root).expanduser().exists():
        check_hub_source(split_gguf(root)[0], what="base model")
    return list(reversed(chain))


def load_full_precision(
    chain: list[str], trust_remote_code: bool = False, dtype: str = "float32"
) -> Any:
    """Load ``chain[0]`` (fp32 unless ``dtype`` says otherwise) and merge each adapter folder
    of ``chain[1:]`` into it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    root = chain[0]
    location, gguf = pretrained_arguments(root)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            location,
            dtype=getattr(torch, dtype),
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            **gguf,
        )
        model = drop_gguf_marker(model)
    except (OSError, ValueError, NotImplementedError) as exc:
        raise UsageError(f"cannot load base model '{root}': {_first_line(exc)}") from None
    for adapter in chain[1:]:
        try:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot apply adapter '{adapter}': {_first_line(exc)}") from None
    return model


def load_tokenizer_for(chain: list[str], trust_remote_code: bool = False) -> Any:
    """The tokenizer of the newest folder in ``chain`` that has one (the run's own first)."""
    from transformers import AutoTokenizer

    problem = "no tokenizer files"
    for source in reversed(chain):
        local = Path(source).is_dir()
        if local and not (Path(source) / "tokenizer_config.json").is_file():
            continue
        location, gguf = pretrained_arguments(source)
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                location, trust_remote_code=trust_remote_code, **gguf
            )
        except (OSError, ValueError, NotImplementedError) as exc:
            problem = _first_line(exc)
            continue
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
    raise UsageError(f"cannot load a tokenizer from {' -> '.join(chain)}: {problem}")


def recorded_dtype(root: str, trust_remote_code: bool = False) -> str:
    """The dtype a base model was published in (``config.json``), ``float32`` if unknown."""
    from transformers import AutoConfig

    if is_gguf(root):  # de-quantized weights: full precision
        return "float32"
    try:
        config = AutoConfig.from_pretrained(root, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return "float32"
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = str(dtype).replace("torch.", "") if dtype is not None else "float32"
    return name if name in _DTYPES else "float32"


def default_output(source: str | Path) -> Path:
    source = Path(source).resolve()
    return source.with_name(f"{source.name}-merged")


def merge_adapter(
    source: str | Path,
    output: str | Path | None = None,
    base: str | None = None,
    dtype: str = "auto",
    force: bool = False,
    say: Any = None,
    trust_remote_code: bool = False,
) -> MergeResult:
    """Merge the adapter in ``source`` (a run folder or an adapter folder) into its base and
    save the result to ``output`` (default ``<source>-merged``), atomically."""
    import torch

    source = Path(source)
    if not source.is_dir():
        raise UsageError(f"no such folder: {source}")
    if not is_adapter_folder(source):
        if (source / "config.json").is_file():
            raise UsageError(
                f"{source} holds a full model, not an adapter (no {ADAPTER_CONFIG}); "
                "there is nothing to merge"
            )
        raise UsageError(f"{source} is not an adapter folder (no {ADAPTER_CONFIG})")
    if dtype not in _DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(_DTYPES)}, got '{dtype}'")
    out = Path(output) if output is not None else default_output(source)
    chain = resolve_chain(source, base)
    for folder in chain:
        if Path(folder).exists() and out.resolve() == Path(folder).resolve():
            raise UsageError(f"output {out} is one of the merged folders; choose another -o")
    if out.exists() and not force:
        raise UsageError(f"{out} already exists; pass --force to overwrite it")
    say = say or (lambda message: None)
    saved_dtype = recorded_dtype(chain[0], trust_remote_code) if dtype == "auto" else dtype
    say(f"merging {' -> '.join(chain)} (fp32), saving as {saved_dtype}")
    model = load_full_precision(chain, trust_remote_code)
    tokenizer = load_tokenizer_for(chain, trust_remote_code)
    model = model.to(getattr(torch, saved_dtype))
    run = read_run_config(source)
    record = {
        "base_model": chain[-2],
        "root_model": chain[0],
        "chain": [_absolute(c) for c in chain],
        "dtype": saved_dtype,
        "run": run_summary(run),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / MERGE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        (staging / "README.md").write_text(model_card(out.name, record, run), encoding="utf-8")
        # mkdtemp made the folder 0700 and safetensors its files 0600: give them what a plain
        # mkdir()/open() gives under the umask before the model appears under its name.
        as_if_created(staging, tree=True)
        _replace_folder(staging, out, force)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    parameters = sum(p.numel() for p in model.parameters())
    return MergeResult(out, chain[-2], chain, saved_dtype, parameters)


def _replace_folder(staging: Path, out: Path, force: bool) -> None:
    if not out.exists():
        os.replace(staging, out)
        return
    if not force:  # appeared while we were merging
        raise UsageError(f"{out} already exists; pass --force to overwrite it")
    if out.is_dir():
        backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        os.replace(out, backup / "old")
        os.replace(staging, out)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        out.unlink()
        os.replace(staging, out)


def run_summary(run: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a results table needs to know about a run: algorithm, hyperparameters, data."""
    if not run:
        return None
    training = run.get("training") or {}
    return {
        "name": training.get("run_name"),
        "algorithm": run.get("algorithm_name"),
        "hyperparameters": dict(run.get("algorithm") or {}),
        "model": (run.get("model") or {}).get("name_or_path"),
        "data": (run.get("data") or {}).get("train"),
    }


def _absolute(name: str) -> str:
    return str(Path(name).resolve()) if Path(name).exists() else name


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if "trust_remote_code" in text:  # transformers' multi-line refusal of custom code
        return (
            "the model ships its own Python code; pass --trust-remote-code to run it "
            "(only for sources you trust)"
        )
    return text.splitlines()[0] if text else type(exc).__name__
