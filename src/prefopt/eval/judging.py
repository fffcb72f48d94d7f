"""``prefopt eval judge``: rate answer files with a judge, concurrently, with retries and resume.

Every answer of ``--answers`` (B) and, when given, ``--baseline`` (A) is rated once; each
rating is appended to ``<out>.partial`` as soon as it arrives, so a failing endpoint or an
interrupt loses nothing and the same command resumes where it stopped. Retryable failures
(HTTP 429/5xx, timeouts, unreachable server, unreadable reply) are retried with exponential
backoff (``backoff · 2^attempt`` seconds, jittered, or the server's ``Retry-After``); after
``max_retries`` retries, or on a non-retryable failure (HTTP 4xx such as a bad key), new work
stops, in-flight calls finish and are kept, and :class:`JudgeFailure` says what happened.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefopt.errors import DataError, UsageError
from prefopt.eval.judges import Judge, JudgeError, JudgeItem, Judgment
from prefopt.eval.metrics import HALLUCINATION_THRESHOLD, judge_summary, win_rate
from prefopt.eval.resumable import ResumableJsonl

RESULTS_KIND = "prefopt.judge"
MAX_BACKOFF = 60.0


class JudgeFailure(Exception):
    """The judge could not rate every answer; the finished ratings are kept for resuming."""

    def __init__(self, message: str, usage: bool) -> None:
        super().__init__(message)
        self.usage = usage


@dataclass
class AnswerFields:
    question: str = "prompt"
    answer: str = "answer"
    reference: str | None = None


def parse_options(items: list[str]) -> dict[str, str]:
    """``--option key=value`` settings as a dict; ``UsageError`` for an item without ``=``."""
    from prefopt.errors import UsageError

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--option expects key=value, got '{item}'")
        options[key.strip()] = value
    return options


def question_text(value: Any) -> str:
    """A prompt as text: a string as is, a message list as its user turns."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        turns = [m.get("content", "") for m in value if isinstance(m, dict)]
        users = [
            m.get("content", "") for m in value if isinstance(m, dict) and m.get("role") == "user"
        ]
        return "\n\n".join(users or turns)
    return str(value)


def read_answers(path: str | Path, fields: AnswerFields) -> list[JudgeItem]:
    from prefopt.data.io import iter_rows

    items: list[JudgeItem] = []
    seen: dict[str, int] = {}
    for line, row in iter_rows(path):
        for name in (fields.question, fields.answer):
            if name not in row:
                raise DataError(path, line, name, "missing field")
        answer = row[fields.answer]
        if not isinstance(answer, str):
            answer = question_text(answer)
        key = str(row["id"]) if "id" in row else str(line)
        if key in seen:
            raise DataError(path, line, "id", f"duplicate id {key!r} (first on line {seen[key]})")
        seen[key] = line
        reference = None
        if fields.reference:
            if fields.reference not in row:
                raise DataError(path, line, fields.reference, "missing field (--reference-field)")
            reference = question_text(row[fields.reference])
        items.append(JudgeItem(key, question_text(row[fields.question]), answer, reference, row))
    return items


def score_with_retries(
    judge: Judge,
    item: JudgeItem,
    max_retries: int,
    backoff: float,
    stop: threading.Event,
) -> Judgment:
    attempt = 0
    while True:
        try:
            return judge.score(item)
        except JudgeError as exc:
            if not exc.retryable or attempt >= max_retries:
                exc.attempts = attempt + 1  # type: ignore[attr-defined]
                raise
            delay = exc.retry_after
            if delay is None:
                delay = backoff * (2**attempt) * random.uniform(0.5, 1.0)
            if stop.wait(min(delay, MAX_BACKOFF)):
                exc.attempts = attempt + 1  # type: ignore[attr-defined]
                raise
            attempt += 1


def judge_items(
    judge: Judge,
    todo: list[tuple[str, str, JudgeItem]],
    store: ResumableJsonl,
    concurrency: int,
    max_retries: int,
    backoff: float,
    progress: Callable[[int], Any] | None = None,
) -> tuple[str, JudgeError | Exception] | None:
    """Rate ``(side, key, item)`` triples into ``store``; the first failure, if any."""
    stop = threading.Event()

    def work(side: str, key: str, item: JudgeItem) -> bool:
        if stop.is_set():
            return False
        try:
            judgment = score_with_retries(judge, item, max_retries, backoff, stop)
        except BaseException:
            stop.set()  # no new work from here on; in-flight calls still finish and are kept
            raise
        store.append(
            {
                "key": key,
                "side": side,
                "id": item.id,
                "score": judgment.score,
                "explanation": judgment.explanation,
            }
        )
        return True

    failure: tuple[str, JudgeError | Exception] | None = None
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="judge") as pool:
        futures = {pool.submit(work, side, key, item): key for side, key, item in todo}
        for future in as_completed(futures):
            try:
                done = future.result()
            except Exception as exc:  # a plugin's bug is reported like an endpoint failure
                if failure is None:
                    failure = (futures[future], exc)
                    stop.set()
                continue
            if done and progress is not None:
                progress(1)
    return failure


def run_judge(
    judge_name: str,
    judge: Judge,
    options: dict[str, Any],
    answers: str | Path,
    baseline: str | Path | None,
    out: str | Path,
    fields: AnswerFields,
    concurrency: int = 4,
    max_retries: int = 4,
    backoff: float = 1.0,
    force: bool = False,
    restart: bool = False,
    progress: Callable[..., Any] | None = None,
    say: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Rate every answer (and baseline answer), write ``out`` and return the results."""
    if concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {concurrency}")
    if max_retries < 0 or backoff < 0:
        raise UsageError("--max-retries and --backoff must be >= 0")
    say = say or (lambda message: None)
    sides = [("answers", answers)] + ([("baseline", baseline)] if baseline else [])
    items = {side: read_answers(path, fields) for side, path in sides}
    if baseline and not {i.id for i in items["answers"]} & {i.id for i in items["baseline"]}:
        raise UsageError(f"{answers} and {baseline} share no ids; cannot compute a win rate")
    settings = {
        "judge": judge_name,
        "options": options,
        "answers": str(answers),
        "baseline": str(baseline) if baseline else None,
        "fields": vars(fields),
    }
    store = ResumableJsonl(out, settings, key_field="key", force=force, restart=restart)
    order = [f"{side}:{item.id}" for side, _ in sides for item in items[side]]
    todo = [
        (side, f"{side}:{item.id}", item)
        for side, _ in sides
        for item in items[side]
        if f"{side}:{item.id}" not in store
    ]
    if len(todo) < len(order):
        say(
            f"resuming: {len(order) - len(todo)} of {len(order)} ratings already in {store.partial}"
        )
    failure = None
    if todo:
        tick = (lambda n: progress(n, "answers", len(todo))) if progress else None
        with store:
            failure = judge_items(judge, todo, store, concurrency, max_retries, backoff, tick)
    if failure is not None:
        key, exc = failure
        attempts = getattr(exc, "attempts", 1)
        what = str(exc) if isinstance(exc, JudgeError) else f"{type(exc).__name__}: {exc}"
        # An input the judge refuses (no gold answer) fails again on a plain rerun: say so.
        bad_input = isinstance(exc, JudgeError) and not exc.retryable
        again = "fix that and run the command again" if bad_input else "run the same command again"
        if store.done:
            saved = (
                f"{len(store.done)} of {len(order)} ratings are saved in {store.partial}; "
                f"{again} to resume"
            )
        else:  # nothing to resume from: leave no partial files behind
            store.discard()
            saved = "no rating was saved" + ("" if bad_input else f"; {again}")
        raise JudgeFailure(
            f"judge '{judge_name}' failed on {key} after {attempts} attempt"
            f"{'s' if attempts != 1 else ''}: {what}. {saved}",
            usage=bad_input,
        )
    store.finish(order, force=force)
    return summarize_ratings(judge_name, options, answers, baseline, store.done)


def summarize_ratings(
    judge_name: str,
    options: dict[str, Any],
    answers: str | Path,
    baseline: str | Path | None,
    ratings: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    by_side: dict[str, dict[str, float]] = {"answers": {}, "baseline": {}}
    for row in ratings.values():
        by_side[row["side"]][str(row["id"])] = float(row["score"])
    metrics = judge_summary(list(by_side["answers"].values()))
    if baseline:
        for name, value in judge_summary(list(by_side["baseline"].values())).items():
            metrics[f"baseline_{name}"] = value
        metrics.update(win_rate(by_side["answers"], by_side["baseline"]))
    return {
        "kind": RESULTS_KIND,
        "judge": judge_name,
        "judge_options": options,
        "answers": str(answers),
        "baseline": str(baseline) if baseline else None,
        "hallucination_threshold": HALLUCINATION_THRESHOLD,
        "metrics": metrics,
    }
