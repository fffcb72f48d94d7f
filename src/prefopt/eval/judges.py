"""LLM-as-judge backends: the :class:`JudgeSpec` plugin kind and the built-in ``openai`` judge.

A judge rates the factual accuracy of one answer from 0 (entirely false or made up) to 10
(every claim correct). Judges are plugins: a module implementing the ``prefopt_judges`` hook
returns ``JudgeSpec`` objects, exactly as algorithms are registered::

    @prefopt.hookimpl
    def prefopt_judges():
        return [JudgeSpec("my-judge", "What it does.", make_judge)]

``make_judge(options)`` receives the command-line settings as a dict (``base_url``, ``model``,
``api_key_env``, ``timeout`` and every ``--option key=value``) and returns an object with
``score(item: JudgeItem) -> Judgment``. A failed call raises :class:`JudgeError`; with
``retryable=True`` the runner retries it with exponential backoff.

The built-in ``openai`` judge speaks the chat-completions protocol of OpenAI and of every
compatible server (vLLM, llama.cpp, Ollama, LiteLLM, ...), over plain HTTP with the standard
library. The API key is read from an environment variable (``OPENAI_API_KEY`` unless
``--api-key-env`` names another); it is sent only in the ``Authorization`` header and never
printed, logged or written.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import prefopt
from prefopt.errors import UsageError

SCORE_MIN, SCORE_MAX = 0.0, 10.0
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"

SYSTEM_PROMPT = (
    "You are a meticulous fact-checker. You rate only the factual accuracy of answers, "
    "not their style or length."
)
USER_PROMPT = """Question:
{question}

Answer to rate:
{answer}
{reference}
Rate the factual accuracy of the answer from 0 to 10: 10 means every claim is correct, \
0 means it is entirely false or made up; deduct points for every incorrect or hallucinated \
claim. Reply with a JSON object and nothing else: \
{{"score": <integer 0-10>, "explanation": "<one sentence>"}}"""
REFERENCE_BLOCK = "\nA reference answer known to be correct:\n{reference}\n"


@dataclass
class JudgeItem:
    """One answer to rate: the question it answers and, optionally, a correct reference."""

    id: str
    question: str
    answer: str
    reference: str | None = None
    #: The whole answer row, for judges that read more fields (``gold``: its aliases).
    row: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Judgment:
    score: float
    explanation: str = ""


class JudgeError(Exception):
    """A failed judge call; ``retryable`` ones (rate limits, 5xx, timeouts) are retried."""

    def __init__(self, message: str, retryable: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class Judge(Protocol):
    def score(self, item: JudgeItem) -> Judgment: ...


@dataclass
class JudgeSpec:
    """A judge backend as the registry knows it.

    - ``name``: the ``--judge`` word; ``summary``: one line for the help.
    - ``make_judge(options)``: builds the judge from the command-line settings.
    - ``options``: option name -> help, for the keys ``make_judge`` understands.
    """

    name: str
    summary: str
    make_judge: Callable[[dict[str, Any]], Judge]
    options: Mapping[str, str] = field(default_factory=dict)


def judge_prompt(item: JudgeItem) -> str:
    reference = REFERENCE_BLOCK.format(reference=item.reference) if item.reference else ""
    return USER_PROMPT.format(question=item.question, answer=item.answer, reference=reference)


_JSON_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)
_SCORE_TEXT = re.compile(r"score\"?\s*[:=]\s*\"?(-?\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_judgment(text: str) -> Judgment:
    """The score (and explanation) in a judge's reply: a JSON object, ``score: N`` or a bare
    number; ``JudgeError`` (retryable) when none is found or it is outside 0–10."""
    content = text.strip()
    candidates = [content] + _JSON_OBJECT.findall(content)
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and "score" in value:
            return _checked(value["score"], str(value.get("explanation", "")), content)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return _checked(value, "", content)
    match = _SCORE_TEXT.search(content)
    if match:
        return _checked(match.group(1), content, content)
    raise JudgeError(f"no score in the judge's reply: {_preview(content)}", retryable=True)


def _checked(score: Any, explanation: str, content: str) -> Judgment:
    try:
        value = float(score)
    except (TypeError, ValueError):
        raise JudgeError(f"score is not a number: {_preview(content)}", retryable=True) from None
    if not SCORE_MIN <= value <= SCORE_MAX:
        raise JudgeError(f"score {value} outside 0-10: {_preview(content)}", retryable=True)
    return Judgment(value, explanation)


def _preview(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "...")


class OpenAIJudge:
    """Factuality judge over an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(
        self,
        model: str,
        base_url: str = DEFAULT_BASE_URL,
        api_key_env: str = DEFAULT_KEY_ENV,
        timeout: float = 60.0,
        temperature: float = 0.0,
        max_tokens: int = 256,
    ) -> None:
        self.model = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self._key = os.environ.get(api_key_env) or None
        self.timeout = timeout
        self.temperature = temperature
        self.max_tokens = max_tokens

    def request_body(self, item: JudgeItem) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": judge_prompt(item)},
            ],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def score(self, item: JudgeItem) -> Judgment:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        data = json.dumps(self.request_body(item)).encode("utf-8")
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()[:300].decode("utf-8", "replace") if exc.fp else ""
            retryable = exc.code in (408, 409, 425, 429) or exc.code >= 500
            raise JudgeError(
                self._redact(f"HTTP {exc.code} from {self.url}: {_preview(body)}"),
                retryable=retryable,
                retry_after=_retry_after(exc.headers.get("Retry-After") if exc.headers else None),
            ) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise JudgeError(
                self._redact(f"cannot reach {self.url}: {reason}"), retryable=True
            ) from None
        try:
            content = json.loads(payload)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeError(
                self._redact(
                    f"not a chat-completions response from {self.url}: "
                    f"{_preview(payload.decode('utf-8', 'replace'))}"
                ),
                retryable=True,
            ) from None
        return parse_judgment(str(content or ""))

    def _redact(self, message: str) -> str:
        return message.replace(self._key, "***") if self._key else message


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def make_openai_judge(options: dict[str, Any]) -> OpenAIJudge:
    model = options.get("model")
    if not model:
        raise UsageError("--model: name the judge model (e.g. gpt-4o-mini)")
    try:
        return OpenAIJudge(
            model=str(model),
            base_url=str(options.get("base_url") or DEFAULT_BASE_URL),
            api_key_env=str(options.get("api_key_env") or DEFAULT_KEY_ENV),
            timeout=float(options.get("timeout") or 60.0),
            temperature=float(options.get("temperature") or 0.0),
            max_tokens=int(options.get("max_tokens") or 256),
        )
    except ValueError as exc:
        raise UsageError(f"openai judge: bad option value ({exc})") from None


OPENAI = JudgeSpec(
    name="openai",
    summary="Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, ...).",
    make_judge=make_openai_judge,
    options={
        "base_url": "API root, e.g. https://api.openai.com/v1 or http://localhost:8000/v1",
        "model": "judge model name",
        "api_key_env": "environment variable holding the API key (default OPENAI_API_KEY)",
        "timeout": "seconds per request (default 60)",
        "temperature": "sampling temperature (default 0)",
        "max_tokens": "reply length limit (default 256)",
    },
)


@prefopt.hookimpl
def prefopt_judges() -> list[JudgeSpec]:
    return [OPENAI]


def get_judge(name: str) -> JudgeSpec:
    """The judge registered as ``name`` (built-in or plugin); ``UsageError`` if unknown."""
    from prefopt.registry import get_registry

    judges = get_registry().collect("prefopt_judges")
    if name not in judges:
        known = ", ".join(sorted(judges)) or "none"
        raise UsageError(f"unknown judge '{name}'. Known judges: {known}.")
    spec = judges[name]
    if not isinstance(spec, JudgeSpec):
        raise UsageError(f"judge '{name}' is a {type(spec).__name__}, not a JudgeSpec")
    return spec
