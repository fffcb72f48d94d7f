"""Turn preference records into token ids, keeping the prompt/completion boundary.

Standard records (strings): the prompt is tokenized with the tokenizer's special tokens (BOS),
completions without, and EOS is appended to each completion. Conversational records (message
lists): the chat template renders the prompt with a generation prompt, and each completion is
the text the template adds after it for the answer turn; EOS is appended unless the template
already ends the turn with it.

Truncation: a prompt longer than ``max_prompt_length`` keeps its end (the question usually sits
last); then each completion is cut so prompt + completion fit ``max_length``. A pair left with an
empty completion is dropped and counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefopt.errors import DataError

_BATCH = 512


@dataclass(frozen=True)
class TokenizationSettings:
    max_length: int = 1024
    max_prompt_length: int = 512

    def fingerprint(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "max_prompt_length": self.max_prompt_length}


@dataclass
class TokenizedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    extras: dict[str, float] = field(default_factory=dict)
    #: Reference log-probs ``(chosen, rejected)`` from the reference cache, when precomputed.
    reference: tuple[float, ...] | None = None
    #: Position in its data set, set by a training run: batches carry it as ``sample_index``, so
    #: the first epoch can record each pair's reference log-probs for the cache.
    index: int | None = None


@dataclass
class TokenizationReport:
    pairs: int = 0
    dropped: int = 0
    prompts_truncated: int = 0
    completions_truncated: int = 0


def render_texts(
    row: dict[str, Any], tokenizer: Any, where: str = "<record>"
) -> tuple[str, str, str, bool]:
    """``(prompt, chosen, rejected, is_chat)`` as text; chat records go through the template."""
    prompt, completions, is_chat = render_responses(
        row["prompt"], [("chosen", row["chosen"]), ("rejected", row["rejected"])], tokenizer, where
    )
    return prompt, completions[0], completions[1], is_chat


def render_responses(
    prompt: Any, responses: Sequence[tuple[str, Any]], tokenizer: Any, where: str = "<record>"
) -> tuple[str, list[str], bool]:
    """``(prompt, [response, ...], is_chat)`` as text for a prompt and its named responses.

    A chat prompt is rendered with the generation prompt; each response is the text the
    template adds after it for that answer turn (TRL's convention)."""
    if isinstance(prompt, str):
        return prompt, [str(response) for _, response in responses], False
    if getattr(tokenizer, "chat_template", None) is None:
        raise DataError(
            where, None, "prompt", "conversational record but the tokenizer has no chat template"
        )
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    completions = []
    for name, messages in responses:
        full = tokenizer.apply_chat_template(list(prompt) + list(messages), tokenize=False)
        if not full.startswith(prompt_text):
            raise DataError(
                where, None, name, "chat template output does not start with the rendered prompt"
            )
        completions.append(full[len(prompt_text) :])
    return prompt_text, completions, True


def tokenize_pairs(
    rows: Iterable[tuple[int, dict[str, Any]]],
    tokenizer: Any,
    settings: TokenizationSettings,
    extra_columns: Sequence[str] = (),
    source: str = "<data>",
) -> tuple[list[TokenizedPair], TokenizationReport]:
    """Tokenize ``(line, record)`` pairs in batches; returns the kept pairs and a report."""
    report = TokenizationReport()
    pairs: list[TokenizedPair] = []
    batch: list[tuple[int, dict[str, Any]]] = []
    for item in rows:
        batch.append(item)
        if len(batch) >= _BATCH:
            _tokenize_batch(batch, tokenizer, settings, extra_columns, source, pairs, report)
            batch = []
    if batch:
        _tokenize_batch(batch, tokenizer, settings, extra_columns, source, pairs, report)
    return pairs, report


def _tokenize_batch(
    batch: list[tuple[int, dict[str, Any]]],
    tokenizer: Any,
    settings: TokenizationSettings,
    extra_columns: Sequence[str],
    source: str,
    out: list[TokenizedPair],
    report: TokenizationReport,
) -> None:
    texts = [render_texts(row, tokenizer, f"{source}:{line}") for line, row in batch]
    chat = [t[3] for t in texts]
    plain_prompts = [t[0] for t, is_chat in zip(texts, chat, strict=True) if not is_chat]
    chat_prompts = [t[0] for t, is_chat in zip(texts, chat, strict=True) if is_chat]
    plain_ids = iter(_encode(tokenizer, plain_prompts, special=True))
    chat_ids = iter(_encode(tokenizer, chat_prompts, special=False))
    completions = _encode(tokenizer, [c for t in texts for c in (t[1], t[2])], special=False)
    eos = tokenizer.eos_token_id
    for index, ((_line, row), is_chat) in enumerate(zip(batch, chat, strict=True)):
        prompt_ids = next(chat_ids) if is_chat else next(plain_ids)
        chosen_ids, rejected_ids = completions[2 * index], completions[2 * index + 1]
        # A chat completion is exactly what the template appends for the answer (TRL's
        # convention): ChatML ends a turn with "<|im_end|>\n", and an EOS after that "\n"
        # would be a second end of turn the model never sees at generation time.
        if eos is not None and not is_chat:
            chosen_ids = _with_eos(chosen_ids, eos)
            rejected_ids = _with_eos(rejected_ids, eos)
        pair = truncate_pair(prompt_ids, chosen_ids, rejected_ids, settings, report)
        if pair is None:
            report.dropped += 1
            continue
        pair.extras = {name: float(row[name]) for name in extra_columns}
        out.append(pair)
        report.pairs += 1


def truncate_pair(
    prompt_ids: list[int],
    chosen_ids: list[int],
    rejected_ids: list[int],
    settings: TokenizationSettings,
    report: TokenizationReport | None = None,
) -> TokenizedPair | None:
    """Apply the truncation policy (:func:`truncate_completions` on the two completions);
    ``None`` when a completion would be left empty."""
    kept = truncate_completions(prompt_ids, [chosen_ids, rejected_ids], settings, report)
    if kept is None:
        return None
    prompt, (chosen, rejected) = kept
    return TokenizedPair(prompt, chosen, rejected)


def truncate_completions(
    prompt_ids: list[int],
    responses: list[list[int]],
    settings: TokenizationSettings,
    report: TokenizationReport | None = None,
) -> tuple[list[int], list[list[int]]] | None:
    """The truncation policy: a prompt over ``max_prompt_length`` keeps its end, then every
    completion is cut to what ``max_length`` leaves; ``None`` when one would be empty."""
    if len(prompt_ids) > settings.max_prompt_length:
        prompt_ids = prompt_ids[len(prompt_ids) - settings.max_prompt_length :]
        if report is not None:
            report.prompts_truncated += 1
    room = settings.max_length - len(prompt_ids)
    if room <= 0:
        return None
    if any(len(ids) > room for ids in responses):
        if report is not None:
            report.completions_truncated += 1
        responses = [ids[:room] for ids in responses]
    if not all(responses):
        return None
    return list(prompt_ids), [list(ids) for ids in responses]


def _encode(tokenizer: Any, texts: list[str], special: bool) -> list[list[int]]:
    if not texts:
        return []
    backend = _plain_backend(tokenizer)
    if backend is not None:  # same ids, without building a BatchEncoding of offsets etc.
        return [
            encoding.ids
            for encoding in backend.encode_batch_fast(texts, add_special_tokens=special)
        ]
    encoded = tokenizer(texts, add_special_tokens=special)["input_ids"]
    return [list(ids) for ids in encoded]


def _plain_backend(tokenizer: Any) -> Any:
    """The Rust tokenizer behind ``tokenizer`` when calling it directly gives exactly what
    ``tokenizer(texts)`` gives: a plain fast tokenizer with no truncation or padding set."""
    try:
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:  # pragma: no cover - older transformers
        return None
    if not isinstance(tokenizer, TokenizersBackend) or hasattr(tokenizer, "_switch_to_input_mode"):
        return None
    if type(tokenizer)._encode_plus is not TokenizersBackend._encode_plus:
        return None
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch_fast"):
        return None
    if backend.truncation is not None or backend.padding is not None:
        return None
    if bool(backend.encode_special_tokens) != bool(tokenizer.split_special_tokens):
        return None
    return backend


def _with_eos(ids: list[int], eos: int) -> list[int]:
    return ids if ids and ids[-1] == eos else [*ids, eos]
