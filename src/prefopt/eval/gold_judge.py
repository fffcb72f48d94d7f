"""The built-in ``gold`` judge: rule-based, offline, a generated answer against a gold answer.

No model and no network: an answer is **correct** (score 10) when, after normalisation, it
contains the gold answer or one of its aliases as a contiguous run of words, and **incorrect**
(score 0) otherwise, so ``prefopt eval judge --judge gold`` gives ``hallucination_rate`` =
share of incorrect answers and ``mean_factuality`` = 10 × answer accuracy.

Normalisation (applied to both sides, in this order): Unicode compatibility forms with accents
stripped (``São`` → ``sao``), case folded, dotted abbreviations joined (``U.S.A.`` → ``usa``),
thousands separators dropped (``1,000`` → ``1000``), possessive ``'s`` and other apostrophes
removed, ``&`` read as ``and``, punctuation read as a word break (``twenty-one`` → ``twenty
one``), the articles ``a``/``an``/``the`` removed, digit ordinals reduced to their number
(``21st`` → ``21``), runs of initials joined (``J. R. R. Tolkien`` → ``jrr tolkien``), and
English number words read as digits (``eight`` → ``8``, ``one hundred and five`` → ``105``,
``two thousand`` → ``2000``, ``first`` … ``tenth`` → ``1`` … ``10``). Spelled-out years
(``nineteen sixty-nine``) are not recognised: write gold years as digits.

Where the gold answer comes from, per answer row: the ``--reference-field`` value when one is
given, else the row's ``gold`` field (``--option gold_field=NAME`` names another); extra
accepted answers from its ``aliases`` field (``--option aliases_field=NAME``), a string or a
list of strings; a gold field may itself be a list. ``--option match=exact`` asks for the
whole normalised answer to equal a gold answer instead of containing one.

What a rule cannot see: an answer that names the gold answer and denies it (``not Canberra``)
or lists several candidates counts as correct under ``match=contains``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import prefopt
from prefopt.errors import UsageError
from prefopt.eval.judges import JudgeError, JudgeItem, JudgeSpec, Judgment

CORRECT, INCORRECT = 10.0, 0.0
MATCH_MODES = ("contains", "exact")
ARTICLES = frozenset({"a", "an", "the"})

_UNIT_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
)
_TEN_WORDS = "twenty thirty forty fifty sixty seventy eighty ninety"
_ORDINAL_WORDS = "first second third fourth fifth sixth seventh eighth ninth tenth"
_UNITS = {word: value for value, word in enumerate(_UNIT_WORDS.split())}
_TENS = {word: 10 * (index + 2) for index, word in enumerate(_TEN_WORDS.split())}
_SCALES = {"thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
_ORDINALS = {word: index + 1 for index, word in enumerate(_ORDINAL_WORDS.split())}
_NUMBER_WORDS = frozenset(_UNITS) | frozenset(_TENS) | frozenset(_SCALES) | {"hundred"}

_ACRONYM = re.compile(r"(?<!\w)(?:\w\.){2,}")
_THOUSANDS = re.compile(r"(?<=\d)[,_](?=\d{3}(?!\d))")
_POSSESSIVE = re.compile(r"['’]s\b")
_APOSTROPHE = re.compile(r"['’`]")
_NON_WORD = re.compile(r"[^\w]+")
_DIGIT_ORDINAL = re.compile(r"^(\d+)(?:st|nd|rd|th)$")


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _number_value(words: Sequence[str]) -> int:
    total, current = 0, 0
    for word in words:
        if word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred":
            current = max(current, 1) * 100
        elif word in _SCALES:
            total += max(current, 1) * _SCALES[word]
            current = 0
    return total + current


def _numbers_as_digits(tokens: list[str]) -> list[str]:
    """Runs of number words as one digit string (``and`` only inside a run)."""
    out: list[str] = []
    index = 0
    while index < len(tokens):
        if tokens[index] not in _NUMBER_WORDS:
            ordinal = _ORDINALS.get(tokens[index])
            out.append(str(ordinal) if ordinal is not None else tokens[index])
            index += 1
            continue
        run: list[str] = []
        while index < len(tokens):
            token = tokens[index]
            if token in _NUMBER_WORDS:
                run.append(token)
            elif (
                token == "and"
                and run
                and index + 1 < len(tokens)
                and tokens[index + 1] in _NUMBER_WORDS
            ):
                pass  # "one hundred and five"
            else:
                break
            index += 1
        out.append(str(_number_value(run)))
    return out


def normalize(text: str) -> list[str]:
    """The words of ``text`` after the normalisation described in the module docstring."""
    text = _fold(text)
    text = _ACRONYM.sub(lambda m: m.group(0).replace(".", ""), text)
    text = _THOUSANDS.sub("", text)
    text = _POSSESSIVE.sub("", text)
    text = _APOSTROPHE.sub("", text)
    text = text.replace("&", " and ")
    tokens = [t for t in _NON_WORD.sub(" ", text).replace("_", " ").split() if t not in ARTICLES]
    tokens = [m.group(1) if (m := _DIGIT_ORDINAL.match(t)) else t for t in tokens]
    return _numbers_as_digits(_joined_initials(tokens))


def _joined_initials(tokens: list[str]) -> list[str]:
    """Runs of two or more one-letter words as one word: ``j r r tolkien`` → ``jrr tolkien``."""
    out: list[str] = []
    run: list[str] = []
    for token in [*tokens, ""]:
        if len(token) == 1 and token.isalpha():
            run.append(token)
            continue
        out += ["".join(run)] if len(run) > 1 else run
        run = []
        if token:
            out.append(token)
    return out


def _contains(haystack: list[str], needle: list[str]) -> bool:
    width = len(needle)
    return any(haystack[i : i + width] == needle for i in range(len(haystack) - width + 1))


def _strings(value: Any, what: str, item: JudgeItem) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [str(value)]
    raise JudgeError(f"answer {item.id}: {what} must be a string or a list of strings")


class GoldJudge:
    """Correct (10) when the answer contains a gold answer or alias, after normalisation."""

    def __init__(
        self, gold_field: str = "gold", aliases_field: str = "aliases", match: str = "contains"
    ) -> None:
        if match not in MATCH_MODES:
            raise UsageError(
                f"gold judge: match must be one of {', '.join(MATCH_MODES)}, got '{match}'"
            )
        self.gold_field = gold_field
        self.aliases_field = aliases_field
        self.match = match

    def gold_answers(self, item: JudgeItem) -> list[str]:
        """The accepted answers of ``item``: its reference (or gold field), then aliases."""
        if item.reference is not None:
            golds = [item.reference]
        else:
            golds = _strings(item.row.get(self.gold_field), f"field '{self.gold_field}'", item)
        aliases = _strings(item.row.get(self.aliases_field), f"field '{self.aliases_field}'", item)
        return [g for g in golds + aliases if g.strip()]

    def score(self, item: JudgeItem) -> Judgment:
        golds = [(gold, normalize(gold)) for gold in self.gold_answers(item)]
        golds = [(gold, words) for gold, words in golds if words]
        if not golds:
            raise JudgeError(
                f"answer {item.id}: no gold answer (field '{self.gold_field}', or name one "
                "with --reference-field or --option gold_field=NAME)"
            )
        answer = normalize(item.answer)
        for gold, words in golds:
            if answer == words if self.match == "exact" else _contains(answer, words):
                return Judgment(CORRECT, f"correct: matches {gold!r}")
        shown = ", ".join(repr(gold) for gold, _ in golds[:4]) + (", ..." if len(golds) > 4 else "")
        return Judgment(INCORRECT, f"incorrect: no match for {shown}")


def make_gold_judge(options: dict[str, Any]) -> GoldJudge:
    return GoldJudge(
        gold_field=str(options.get("gold_field") or "gold"),
        aliases_field=str(options.get("aliases_field") or "aliases"),
        match=str(options.get("match") or "contains"),
    )


GOLD = JudgeSpec(
    name="gold",
    summary="Rule-based and offline: correct when the answer contains the gold answer or an alias.",
    make_judge=make_gold_judge,
    options={
        "gold_field": "field with the gold answer (default gold; --reference-field wins)",
        "aliases_field": "field with other accepted answers, a string or a list (default aliases)",
        "match": "contains (default: the gold words appear in the answer) or exact",
    },
)


@prefopt.hookimpl
def prefopt_judges() -> list[JudgeSpec]:
    return [GOLD]
