"""The built-in converters: ``hh``, ``ultrafeedback``, ``shp``, ``messages``, ``columns`` (one
pair a row) and ``ultrafeedback-raw``, ``nectar`` (one list of ranked responses a row).

Each function turns one input row into a record; the fields it did not read travel along
after ``prompt``/``chosen``/``rejected`` in their input order. This module is registered as
a plugin (it implements the ``prefopt_converters`` hook) exactly as a third party's would be.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import prefopt
from prefopt.data.converters.spec import ConversionError, ConverterSpec, ConvertOptions

Messages = list[dict[str, Any]]

_HH_MARKER = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def _record(
    prompt: Any, chosen: Any, rejected: Any, row: dict[str, Any], used: Iterable[str]
) -> dict[str, Any]:
    """The record, followed by the row's fields that the converter did not use."""
    record = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    skip = set(used) | set(record)
    record.update((key, value) for key, value in row.items() if key not in skip)
    return record


def _field(row: dict[str, Any], key: str) -> Any:
    if key not in row:
        raise ConversionError(key, "missing field")
    return row[key]


def _text(row: dict[str, Any], key: str) -> str:
    value = _field(row, key)
    if not isinstance(value, str):
        raise ConversionError(key, f"expected a string, got {type(value).__name__}")
    return value


def _messages(row: dict[str, Any], key: str) -> Messages:
    value = _field(row, key)
    if not isinstance(value, list) or not all(
        isinstance(m, dict) and "role" in m and "content" in m for m in value
    ):
        raise ConversionError(key, "expected a list of {role, content} messages")
    return value


# -- hh ------------------------------------------------------------------------------------


def parse_hh_transcript(text: str, field: str) -> Messages:
    """An HH-RLHF transcript (``\\n\\nHuman: ...\\n\\nAssistant: ...``) as messages."""
    if text.startswith(("Human:", "Assistant:")):
        text = "\n\n" + text
    parts = _HH_MARKER.split(text)
    if len(parts) < 3:
        raise ConversionError(field, "no 'Human:'/'Assistant:' turns found")
    if parts[0].strip():
        raise ConversionError(field, "text before the first 'Human:' turn")
    return [
        {"role": _HH_ROLES[speaker], "content": content.strip()}
        for speaker, content in zip(parts[1::2], parts[2::2], strict=True)
    ]


def convert_hh(row: dict[str, Any], options: ConvertOptions) -> dict[str, Any]:
    """Anthropic HH-RLHF: ``chosen``/``rejected`` are whole transcripts sharing every turn
    but the last; the prompt is the turns before the final assistant reply."""
    turns = {}
    for field in ("chosen", "rejected"):
        messages = parse_hh_transcript(_text(row, field), field)
        if messages[-1]["role"] != "assistant":
            raise ConversionError(field, "transcript does not end with an 'Assistant:' turn")
        if len(messages) < 2:
            raise ConversionError(field, "transcript has no 'Human:' turn before the reply")
        turns[field] = messages
    prompt = turns["chosen"][:-1]
    if turns["rejected"][:-1] != prompt:
        raise ConversionError(
            "rejected", "transcript differs from chosen before the final 'Assistant:' turn"
        )
    return _record(
        prompt, turns["chosen"][-1:], turns["rejected"][-1:], row, ("chosen", "rejected")
    )


# -- shared-prefix conversations (messages, ultrafeedback) ---------------------------------


def split_shared_prefix(
    chosen: Messages, rejected: Messages
) -> tuple[Messages, Messages, Messages]:
    """``(prompt, chosen_reply, rejected_reply)`` from two whole conversations: the prompt
    is their longest shared prefix of identical messages."""
    shared = 0
    for mine, theirs in zip(chosen, rejected, strict=False):
        if (mine["role"], mine["content"]) != (theirs["role"], theirs["content"]):
            break
        shared += 1
    if shared == len(chosen) == len(rejected):
        raise ConversionError("rejected", "identical to chosen")
    chosen_reply, rejected_reply = chosen[shared:], rejected[shared:]
    for field, reply in (("chosen", chosen_reply), ("rejected", rejected_reply)):
        if not reply:
            raise ConversionError(field, "nothing after the part shared with the other reply")
        if reply[0]["role"] != "assistant":
            raise ConversionError(
                field,
                f"after the shared prefix the conversation continues with a "
                f"'{reply[0]['role']}' message; expected the assistant's reply",
            )
    return chosen[:shared], chosen_reply, rejected_reply


def convert_messages(row: dict[str, Any], options: ConvertOptions) -> dict[str, Any]:
    """Two whole conversations (``--chosen-key``/``--rejected-key``) sharing a prefix."""
    chosen = _messages(row, options.chosen_key)
    rejected = _messages(row, options.rejected_key)
    prompt, chosen_reply, rejected_reply = split_shared_prefix(chosen, rejected)
    if not prompt:
        raise ConversionError(options.chosen_key, "the two conversations share no prompt")
    used = (options.chosen_key, options.rejected_key)
    return _record(prompt, chosen_reply, rejected_reply, row, used)


def convert_ultrafeedback(row: dict[str, Any], options: ConvertOptions) -> dict[str, Any]:
    """UltraFeedback binarized: a ``prompt`` string and ``chosen``/``rejected`` message
    lists that repeat the user turn before the reply (or hold the reply alone)."""
    chosen = _messages(row, "chosen")
    rejected = _messages(row, "rejected")
    prompt, chosen_reply, rejected_reply = split_shared_prefix(chosen, rejected)
    if not prompt:
        prompt = [{"role": "user", "content": _text(row, "prompt")}]
    used = ("prompt", "chosen", "rejected", "messages")
    return _record(prompt, chosen_reply, rejected_reply, row, used)


# -- lists: ultrafeedback-raw, nectar -----------------------------------------------------


def _list_record(
    prompt: Any, responses: list[Any], field: str, values: list[Any], row: dict[str, Any],
    used: Iterable[str], **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    """A list record (``scores`` or ``ranking`` in ``field``), then the row's unused fields."""
    record = {"prompt": prompt, "responses": responses, field: values, **extra}
    skip = set(used) | set(record)
    record.update((key, value) for key, value in row.items() if key not in skip)
    return record


def _rating(value: Any) -> float | None:
    """An UltraFeedback aspect rating (``"4"``, ``4``, ``"N/A"``) as a number or ``None``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None


def convert_ultrafeedback_raw(row: dict[str, Any], options: ConvertOptions) -> dict[str, Any]:
    """UltraFeedback as released (openbmb/UltraFeedback): an ``instruction`` and its
    ``completions``, each with a ``response``, the ``model`` that wrote it, an
    ``overall_score``, a ``fine-grained_score`` and per-aspect ``annotations``. Every completion
    is kept: ``scores`` from ``--score-key`` (``overall_score`` by default), ``models`` and the
    per-aspect ``ratings`` (helpfulness, honesty, ...) alongside."""
    instruction = _text(row, "instruction")
    completions = _field(row, "completions")
    if not isinstance(completions, list) or len(completions) < 2:
        raise ConversionError("completions", "expected a list of 2 or more completions")
    responses, scores, models, ratings = [], [], [], []
    for index, completion in enumerate(completions):
        where = f"completions[{index}]"
        if not isinstance(completion, dict):
            raise ConversionError(where, "expected an object")
        response = completion.get("response")
        if not isinstance(response, str):
            raise ConversionError(f"{where}.response", "missing or not a string")
        if options.score_key not in completion:
            raise ConversionError(
                f"{where}.{options.score_key}",
                "missing field (--score-key names a number each completion has, such as "
                "overall_score or fine-grained_score)",
            )
        score = completion[options.score_key]
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise ConversionError(
                f"{where}.{options.score_key}", f"expected a number, got {score!r}"
            )
        responses.append([{"role": "assistant", "content": response}])
        scores.append(score)
        models.append(completion.get("model"))
        annotations = completion.get("annotations") or {}
        ratings.append(
            {
                aspect: _rating(value.get("Rating") if isinstance(value, dict) else value)
                for aspect, value in annotations.items()
            }
        )
    prompt = [{"role": "user", "content": instruction}]
    used = ("instruction", "completions")
    return _list_record(prompt, responses, "scores", scores, row, used, models=models,
                        ratings=ratings)  # fmt: skip


def convert_nectar(row: dict[str, Any], options: ConvertOptions) -> dict[str, Any]:
    """Nectar (berkeley-nest/Nectar): an HH-style ``prompt`` transcript ending in an empty
    ``Assistant:`` turn, and ``answers`` ranked by GPT-4, each ``{"answer", "model", "rank"}``
    (1 is best). Every answer is kept, ``ranking`` from the ranks, ``models`` alongside."""
    messages = parse_hh_transcript(_text(row, "prompt"), "prompt")
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages = messages[:-1]
    if not messages or messages[-1]["role"] != "user":
        raise ConversionError("prompt", "transcript does not end with a 'Human:' turn to answer")
    answers = _field(row, "answers")
    if not isinstance(answers, list) or len(answers) < 2:
        raise ConversionError("answers", "expected a list of 2 or more answers")
    responses, ranks, models = [], [], []
    for index, answer in enumerate(answers):
        where = f"answers[{index}]"
        if not isinstance(answer, dict) or not isinstance(answer.get("answer"), str):
            raise ConversionError(f"{where}.answer", "missing or not a string")
        rank = answer.get("rank")
        if isinstance(rank, bool) or not isinstance(rank, int | float):
            raise ConversionError(f"{where}.rank", f"expected a rank 1, 2, ..., got {rank!r}")
        responses.append([{"role": "assistant", "content": answer["answer"].strip()}])
        ranks.append(int(rank) if float(rank).is_integer() else rank)
        models.append(answer.get("model"))
    used = ("prompt", "answers")
    return _list_record(messages, responses, "ranking", ranks, row, used, models=models)


# -- shp -----------------------------------------------------------------------------------


def convert_shp(row: dict[str, Any], options: ConvertOptions) -> dict[str, Any]:
    """Stanford Human Preferences: ``history``, answers ``human_ref_A``/``human_ref_B`` and
    ``labels`` (1 when A is preferred, 0 when B is)."""
    history = _text(row, "history")
    answers = (_text(row, "human_ref_A"), _text(row, "human_ref_B"))
    label = _field(row, "labels")
    if isinstance(label, bool) or label not in (0, 1):
        raise ConversionError("labels", f"expected 0 or 1, got {label!r}")
    chosen, rejected = answers if label == 1 else answers[::-1]
    used = ("history", "human_ref_A", "human_ref_B", "labels")
    return _record(
        [{"role": "user", "content": history}],
        [{"role": "assistant", "content": chosen}],
        [{"role": "assistant", "content": rejected}],
        row,
        used,
    )


# -- columns -------------------------------------------------------------------------------


def convert_columns(row: dict[str, Any], options: ConvertOptions) -> dict[str, Any]:
    """Any rows holding the three parts under other names (``--prompt-key``, ...)."""
    keys = (options.prompt_key, options.chosen_key, options.rejected_key)
    values = [_field(row, key) for key in keys]
    for key, value in zip(keys, values, strict=True):
        if not isinstance(value, str | list):
            raise ConversionError(
                key, f"expected a string or a message list, got {type(value).__name__}"
            )
    return _record(values[0], values[1], values[2], row, keys)


@prefopt.hookimpl
def prefopt_converters() -> list[ConverterSpec]:
    """The built-in formats."""
    return [
        ConverterSpec("hh", "Anthropic HH-RLHF transcripts (Human:/Assistant: turns)", convert_hh),
        ConverterSpec(
            "ultrafeedback",
            "UltraFeedback binarized: prompt plus chosen/rejected message lists",
            convert_ultrafeedback,
        ),
        ConverterSpec(
            "shp", "Stanford SHP: history, two answers and a preference label", convert_shp
        ),
        ConverterSpec(
            "messages",
            "chosen/rejected whole conversations; their shared prefix is the prompt",
            convert_messages,
        ),
        ConverterSpec(
            "ultrafeedback-raw",
            "UltraFeedback as released: an instruction and all its scored completions (a list)",
            convert_ultrafeedback_raw,
        ),
        ConverterSpec(
            "nectar",
            "Nectar: an HH-style prompt and its answers ranked 1 (best) to 7 (a list)",
            convert_nectar,
        ),
        ConverterSpec(
            "columns",
            "prompt/chosen/rejected under any names (--prompt-key, --chosen-key, --rejected-key)",
            convert_columns,
        ),
    ]
