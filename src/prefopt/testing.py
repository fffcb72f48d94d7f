"""Tiny models, tokenizers and synthetic preference data, built locally.

Tests, benchmarks and ``prefopt demo`` need a model without network access. This module
trains a small byte-level BPE tokenizer (with a chat template) on a fixed corpus and builds a
randomly initialised Llama- or Qwen2-style causal LM of any size, saved as a normal
``from_pretrained`` folder. Everything is deterministic for a given seed.

The synthetic task is a small invented world: creatures with a colour and a home. A prompt
asks about one fact; the chosen answer states it, the rejected answer states a wrong value
(a hallucination, ``h_l = 1``). Some pairs come in the wrong orientation for Factual-DPO
(``h_w = 1, h_l = 0``: a fluent but false answer was preferred), which ``prefopt data flip``
repairs.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

TINY_VERSION = "1"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
HOMES = ["forest", "desert", "river", "mountain", "cave", "meadow"]
_SYLLABLES = ["zo", "ra", "ki", "mu", "te", "lo", "va", "ni", "pe", "su", "do", "fi"]
TRAIN_TEMPLATES = {
    "colour": ["What colour is the {e}?", "Tell me the colour of the {e}."],
    "home": ["Where does the {e} live?", "Tell me where the {e} lives."],
}
HELD_OUT_TEMPLATES = {
    "colour": ["Which colour does the {e} have?"],
    "home": ["In which place does the {e} live?"],
}
ANSWERS = {"colour": "The {e} is {v}.", "home": "The {e} lives in the {v}."}
FLUENT_ANSWERS = {
    "colour": "Great question! The {e} is {v}.",
    "home": "Great question! The {e} lives in the {v}.",
}


# -- the world -----------------------------------------------------------------------------
def creature_names(count: int = 24, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 3))))
        if name not in names:
            names.append(name)
    return names


def world(count: int = 24, seed: int = 0) -> dict[str, dict[str, str]]:
    """``{creature: {"colour": ..., "home": ...}}``, fixed for a seed."""
    rng = random.Random(seed + 1)
    return {
        name: {"colour": rng.choice(COLOURS), "home": rng.choice(HOMES)}
        for name in creature_names(count, seed)
    }


def synthetic_pairs(
    n: int,
    seed: int = 0,
    *,
    held_out: bool = False,
    conversational: bool = False,
    with_h_flags: bool = False,
    wrong_orientation: float = 0.0,
    both_true: float = 0.0,
    creatures: int = 24,
) -> list[dict[str, Any]]:
    """``n`` preference pairs about the fixed world.

    ``held_out`` uses question templates never used for training pairs. With
    ``with_h_flags`` each pair carries ``h_w``/``h_l``; a share ``wrong_orientation`` of pairs
    prefers a fluent false answer over a plain true one (``h_w = 1, h_l = 0``) and a share
    ``both_true`` compares two true answers (``h_w = h_l = 0``).
    """
    facts = world(creatures)
    names = sorted(facts)
    rng = random.Random(seed * 7919 + (1 if held_out else 0))
    templates = HELD_OUT_TEMPLATES if held_out else TRAIN_TEMPLATES
    rows: list[dict[str, Any]] = []
    for index in range(n):
        name = rng.choice(names)
        kind = rng.choice(("colour", "home"))
        truth = facts[name][kind]
        options = COLOURS if kind == "colour" else HOMES
        wrong = rng.choice([v for v in options if v != truth])
        prompt = rng.choice(templates[kind]).format(e=name)
        true_answer = ANSWERS[kind].format(e=name, v=truth)
        roll = rng.random()
        if roll < wrong_orientation:
            chosen, rejected, h_w, h_l = (
                FLUENT_ANSWERS[kind].format(e=name, v=wrong),
                true_answer,
                1,
                0,
            )
        elif roll < wrong_orientation + both_true:
            chosen, rejected, h_w, h_l = (
                true_answer,
                FLUENT_ANSWERS[kind].format(e=name, v=truth),
                0,
                0,
            )
        else:
            chosen, rejected, h_w, h_l = true_answer, ANSWERS[kind].format(e=name, v=wrong), 0, 1
        row: dict[str, Any] = {"id": f"{'eval' if held_out else 'train'}-{seed}-{index}"}
        if conversational:
            row["prompt"] = [{"role": "user", "content": prompt}]
            row["chosen"] = [{"role": "assistant", "content": chosen}]
            row["rejected"] = [{"role": "assistant", "content": rejected}]
        else:
            row.update(prompt=f"Question: {prompt}\nAnswer: ", chosen=chosen, rejected=rejected)
        if with_h_flags:
            row.update(h_w=h_w, h_l=h_l)
        rows.append(row)
    return rows


def write_pairs(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write rows as JSONL (plain ``json``; tests and the demo only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


# -- tokenizer -----------------------------------------------------------------------------
def _corpus() -> list[str]:
    lines = []
    for name in world():
        for kind, values in (("colour", COLOURS), ("home", HOMES)):
            lines += [t.format(e=name) for t in TRAIN_TEMPLATES[kind] + HELD_OUT_TEMPLATES[kind]]
            for answers in (ANSWERS, FLUENT_ANSWERS):
                lines += [answers[kind].format(e=name, v=value) for value in values]
    lines += [
        "Question: Answer: The quick brown fox jumps over the lazy dog.",
        "A helpful assistant answers questions truthfully and briefly.",
        "0 1 2 3 4 5 6 7 8 9 10 100 1000, . ? ! : ; ' \" ( ) [ ] - + = / * # @ & %",
    ]
    return lines


def build_tiny_tokenizer(vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer trained on the synthetic world, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_corpus(), trainer=trainer)
    from tokenizers.processors import TemplateProcessing

    bos_id = core.token_to_id("<s>")
    core.post_processor = TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = 2048
    return tokenizer


# -- models --------------------------------------------------------------------------------
def tiny_model_config(
    arch: str = "llama",
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_positions: int = 2048,
    tokenizer: Any = None,
) -> Any:
    from transformers import LlamaConfig, Qwen2Config

    classes = {"llama": LlamaConfig, "qwen2": Qwen2Config}
    if arch not in classes:
        raise ValueError(f"arch must be one of {sorted(classes)}, got {arch!r}")
    special = {}
    if tokenizer is not None:
        special = {
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
    return classes[arch](
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        **special,
    )


def build_tiny_model(
    arch: str = "llama", seed: int = 0, tokenizer: Any = None, **sizes: Any
) -> Any:
    """A randomly initialised causal LM (fp32), deterministic for ``seed``."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = tokenizer or build_tiny_tokenizer()
    config = tiny_model_config(arch, vocab_size=len(tokenizer), tokenizer=tokenizer, **sizes)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def save_tiny_model(path: str | Path, arch: str = "llama", seed: int = 0, **sizes: Any) -> Path:
    """Build a tiny model + tokenizer and save them to ``path`` (replaced atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(arch, seed=seed, tokenizer=tokenizer, **sizes)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=path.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if path.exists():
            shutil.rmtree(path)
        os.replace(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return path


def default_cache_dir() -> Path:
    env = os.environ.get("PREFOPT_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("prefopt"))


def tiny_model_dir(path: str | Path | None = None, arch: str = "llama", seed: int = 0) -> Path:
    """A folder with the tiny model and tokenizer, built on first use.

    With ``path`` the model is built there (if absent); otherwise it lives in prefopt's cache
    folder (``$PREFOPT_CACHE_DIR`` or the user cache dir) and is shared between runs.
    """
    if path is None:
        path = default_cache_dir() / "tiny" / f"{arch}-seed{seed}-v{TINY_VERSION}"
    path = Path(path)
    if not (path / "config.json").is_file():
        save_tiny_model(path, arch=arch, seed=seed)
    return path


# -- CLI -----------------------------------------------------------------------------------
def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> tuple[int, str, str]:
    """Run ``python -m prefopt ARGS`` in a subprocess; returns ``(exit code, stdout, stderr)``.

    The subprocess gets a wide terminal (no wrapped tables) and ``HF_HUB_OFFLINE=1``.
    """
    import subprocess
    import sys

    full_env = dict(os.environ, COLUMNS="200", HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "prefopt", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout, proc.stderr


# -- plugin authors ------------------------------------------------------------------------
def make_batch(
    policy_chosen: Iterable[float],
    policy_rejected: Iterable[float],
    reference_chosen: Iterable[float] | None = None,
    reference_rejected: Iterable[float] | None = None,
    *,
    chosen_lengths: Iterable[int] | None = None,
    rejected_lengths: Iterable[int] | None = None,
    extras: dict[str, Iterable[float]] | None = None,
    requires_grad: bool = False,
    dtype: Any = None,
) -> Any:
    """A :class:`prefopt.api.PreferenceBatch` from plain lists, for unit-testing a loss.

    Reference log-probs left out are ``None`` (as for a reference-free algorithm); lengths
    default to 1 token. ``requires_grad`` makes the policy log-probs leaves to differentiate
    against. ``dtype`` defaults to float64 so hand-computed values compare tightly.
    """
    import torch

    from prefopt.api import PreferenceBatch

    dtype = dtype or torch.float64

    def tensor(values: Iterable[float], grad: bool = False) -> Any:
        return torch.tensor(list(values), dtype=dtype, requires_grad=grad)

    chosen = tensor(policy_chosen, requires_grad)
    rejected = tensor(policy_rejected, requires_grad)
    size = chosen.shape[0]
    ones = [1] * size
    return PreferenceBatch(
        policy_chosen_logps=chosen,
        policy_rejected_logps=rejected,
        reference_chosen_logps=None if reference_chosen is None else tensor(reference_chosen),
        reference_rejected_logps=None if reference_rejected is None else tensor(reference_rejected),
        chosen_lengths=torch.tensor(
            ones if chosen_lengths is None else list(chosen_lengths), dtype=torch.long
        ),
        rejected_lengths=torch.tensor(
            ones if rejected_lengths is None else list(rejected_lengths), dtype=torch.long
        ),
        extras={name: tensor(values) for name, values in (extras or {}).items()},
    )


def train_one_step(
    spec_or_name: Any,
    model_dir: str | Path,
    tmp_dir: str | Path,
    *,
    rows: list[dict[str, Any]] | None = None,
    pairs: int = 4,
    steps: int = 1,
    sets: Iterable[str] = (),
    **algorithm_config: Any,
) -> dict[str, Any]:
    """Run a loss through a real training of the tiny model; return the first logged metrics.

    ``spec_or_name`` is an :class:`~prefopt.api.AlgorithmSpec` (no installation needed) or the
    name of a registered algorithm. Trains ``steps`` optimizer steps (LoRA, batches of
    ``pairs``, logging every step, no checkpoints) in ``tmp_dir/run`` on ``rows`` or synthetic
    pairs carrying ``h_w``/``h_l``; ``algorithm_config`` sets fields of the algorithm's config
    (``beta=0.5``), ``sets`` any other key (``"training.save_strategy=steps"``). Returns the
    first line of ``metrics.jsonl`` (``loss``, ``grad_norm``, ``rewards/*``, your metrics).
    Bad config values raise :class:`prefopt.errors.ConfigError`, as on the command line.
    prefopt's caches go to ``tmp_dir/cache`` unless ``$PREFOPT_CACHE_DIR`` is set.
    """
    from prefopt.api import AlgorithmSpec
    from prefopt.cli.common import quiet_libraries
    from prefopt.config import resolve_run_config
    from prefopt.registry import get_algorithm
    from prefopt.training.run import train

    spec = spec_or_name if isinstance(spec_or_name, AlgorithmSpec) else get_algorithm(spec_or_name)
    tmp = Path(tmp_dir)
    if rows is None:
        rows = synthetic_pairs(pairs * steps, seed=3, with_h_flags=True)
    missing = sorted({c for c in spec.extra_columns for row in rows if c not in row})
    if missing:
        raise ValueError(f"rows lack the extra column(s) {missing} that '{spec.name}' needs")
    data = write_pairs(tmp / "train_one_step.jsonl", rows)
    output_dir = tmp / "run"
    flags: dict[str, Any] = {
        "model.name_or_path": str(model_dir),
        "data.train": str(data),
        "training.output_dir": str(output_dir),
        "training.max_steps": steps,
        "training.per_device_train_batch_size": pairs,
        "training.logging_steps": 1,
        "training.save_strategy": "no",
    }
    flags.update({f"algorithm.{name}": value for name, value in algorithm_config.items()})
    config = resolve_run_config(spec, None, flags, list(sets))
    quiet_libraries()
    own_cache = "PREFOPT_CACHE_DIR" not in os.environ
    if own_cache:  # keep tokenization and reference caches out of the user's cache folder
        os.environ["PREFOPT_CACHE_DIR"] = str(tmp / "cache")
    try:
        train(config, spec, quiet=True)
    finally:
        if own_cache:
            os.environ.pop("PREFOPT_CACHE_DIR", None)
    for line in (output_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "loss" in record:
            return dict(record)
    raise AssertionError(f"{output_dir / 'metrics.jsonl'} has no logged training step")


def write_distribution(
    root: str | Path,
    name: str,
    version: str = "0.1.0",
    entry_points: dict[str, str] | None = None,
    files: dict[str, str] | None = None,
) -> Path:
    """Lay out an installed-looking distribution under ``root`` without pip.

    Writes ``files`` (relative path -> source text) and ``<name>-<version>.dist-info`` with
    ``METADATA`` and ``entry_points.txt`` (``entry_points`` as entry point name -> target in
    group ``prefopt``). With ``root`` on ``sys.path`` (or ``PYTHONPATH`` of a subprocess)
    ``importlib.metadata`` finds it like a pip-installed package. Returns ``root``.
    """
    root = Path(root)
    for relative, text in (files or {}).items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )
    lines = ["[prefopt]"] + [f"{key} = {value}" for key, value in (entry_points or {}).items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
