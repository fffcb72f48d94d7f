"""``prefopt eval generate``: answers to a file of prompts, batched, resumable.

Prompts are rendered as in training: a message list goes through the tokenizer's chat
template with the generation prompt; a plain string is tokenized as is, with BOS (``--chat``
wraps it as a user message instead). Greedy decoding unless ``temperature > 0``; sampled
batches are seeded from ``seed`` and the batch's first prompt index. Each output line is the
input row with ``id`` first and ``answer``, ``generated_tokens`` and ``finished`` (EOS was
produced) added; ``chosen``/``rejected`` of a pairs file travel along (a reference answer for
``prefopt eval judge --reference-field chosen``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefopt.errors import DataError, UsageError
from prefopt.eval.resumable import ResumableJsonl

CHAT_MODES = ("auto", "always")


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 8
    max_prompt_length: int = 1024
    chat: str = "auto"

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise UsageError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise UsageError(f"--temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.chat not in CHAT_MODES:
            raise UsageError(f"--chat must be one of {', '.join(CHAT_MODES)}, got '{self.chat}'")


@dataclass
class Prompt:
    key: str
    line: int
    row: dict[str, Any]


def read_prompts(path: str | Path) -> list[Prompt]:
    """Rows with a ``prompt`` (string or message list); ``id`` or the line number as key."""
    from prefopt.data.io import iter_rows

    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    for line, row in iter_rows(path):
        prompt = row.get("prompt")
        if prompt is None:
            raise DataError(path, line, "prompt", "missing field")
        if isinstance(prompt, str):
            if not prompt.strip():
                raise DataError(path, line, "prompt", "empty string")
        elif not (
            isinstance(prompt, list)
            and prompt
            and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt)
        ):
            raise DataError(path, line, "prompt", "expected a string or a list of messages")
        key = str(row["id"]) if "id" in row else str(line)
        if key in seen:
            raise DataError(path, line, "id", f"duplicate id {key!r} (first on line {seen[key]})")
        seen[key] = line
        prompts.append(Prompt(key, line, row))
    return prompts


def render_prompt(prompt: Any, tokenizer: Any, chat: str) -> list[int]:
    """Token ids of one prompt, ready for generation."""
    if isinstance(prompt, str) and chat != "always":
        return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    if getattr(tokenizer, "chat_template", None) is None:
        raise UsageError("the tokenizer has no chat template; use plain-string prompts")
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def generate_batch(
    model: Any, tokenizer: Any, batch: list[list[int]], settings: GenerationSettings, seed: int
) -> list[tuple[str, int, bool]]:
    """``(answer, generated tokens, finished)`` per prompt of a left-padded batch."""
    import torch

    pad = tokenizer.pad_token_id
    eos = tokenizer.eos_token_id
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention[row, width - len(ids) :] = 1
    device = next(model.parameters()).device
    kwargs: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "pad_token_id": pad,
        "eos_token_id": eos,
        "do_sample": settings.temperature > 0,
    }
    if settings.temperature > 0:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
        torch.manual_seed(seed)
    with torch.no_grad():
        output = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs
        )
    results = []
    for row in output[:, width:].tolist():
        finished = eos in row
        tokens = row[: row.index(eos)] if finished else row
        answer = tokenizer.decode(tokens, skip_special_tokens=True).strip()
        results.append((answer, len(tokens) + (1 if finished else 0), finished))
    return results


def generate_file(
    model: str,
    prompts_path: str | Path,
    out: str | Path,
    settings: GenerationSettings,
    force: bool = False,
    restart: bool = False,
    dtype: str = "float32",
    progress: Callable[..., Any] | None = None,
    say: Callable[[str], Any] | None = None,
    trust_remote_code: bool = False,
) -> tuple[Path, int, int]:
    """Generate answers for every prompt not yet in ``<out>.partial``; returns
    ``(out, generated now, resumed)``."""
    import torch

    from prefopt.eval.offline import load_policy, plan_models
    from prefopt.modeling.merge import load_tokenizer_for

    settings.check()
    say = say or (lambda message: None)
    prompts = read_prompts(prompts_path)
    plan = plan_models(model, no_ref=True, trust_remote_code=trust_remote_code)
    store_settings = {"model": str(model), "prompts": str(prompts_path), **asdict(settings)}
    store_settings.pop("batch_size")  # batching does not change greedy answers
    store = ResumableJsonl(out, store_settings, key_field="id", force=force, restart=restart)
    todo = [(index, p) for index, p in enumerate(prompts) if p.key not in store]
    resumed = len(prompts) - len(todo)
    if resumed:
        say(f"resuming: {resumed} of {len(prompts)} answers already in {store.partial}")
    if todo:
        tokenizer = load_tokenizer_for(plan.chain, plan.trust_remote_code)
        policy = load_policy(plan, dtype)
        if plan.adapter:
            policy = policy.merge_and_unload()
        policy = policy.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        keep = settings.max_prompt_length
        with store:
            for start in range(0, len(todo), settings.batch_size):
                chunk = todo[start : start + settings.batch_size]
                ids = [
                    render_prompt(p.row["prompt"], tokenizer, settings.chat)[-keep:]
                    for _, p in chunk
                ]
                seed = settings.seed * 1_000_003 + chunk[0][0]
                for (_, p), (answer, count, finished) in zip(
                    chunk, generate_batch(policy, tokenizer, ids, settings, seed), strict=True
                ):
                    row = {
                        "id": p.row.get("id", p.key),
                        "prompt": p.row["prompt"],
                        "answer": answer,
                    }
                    row.update(generated_tokens=count, finished=finished)
                    row.update({k: v for k, v in p.row.items() if k not in row})
                    store.append(row)
                if progress is not None:
                    progress(len(chunk), "prompts", len(todo))
    path = store.finish([p.key for p in prompts], force=force)
    return path, len(todo), resumed
