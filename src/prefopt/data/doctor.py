"""``prefopt data doctor``: what in a preference file makes DPO learn the wrong thing.

``data validate`` answers "can this file be trained on?"; the doctor answers "what will the
model learn from it?". Each check gives counts, a verdict and examples located as
``file:line: field: ...``:

- **length bias**: the share of pairs whose chosen answer is longer (in characters) and the
  mean chosen/rejected length ratio. When "prefer the longer answer" already picks the chosen
  one in :data:`LENGTH_BIAS_SHARE` of the pairs or more (or the shorter one does), length
  alone separates the data, and DPO learns it first;
- **near-identical pairs**: chosen and rejected with the same words and symbols once case and
  spacing are folded, or whose word sequences have a similarity ratio
  (:class:`difflib.SequenceMatcher`) of :data:`NEAR_IDENTICAL` or more. The gradient of such a
  pair sits on the few tokens that differ and pushes the shared ones down in both answers
  (Razin et al. 2024 tie likelihood displacement to such pairs). A minimal pair made on
  purpose (one fact corrected in a long answer) is one too: the advice says to keep those and
  watch the displacement check. A short pair ("is red" against "is blue") differs in a sixth
  of its words and is not counted;
- **leakage**: eval prompts that also occur in the training file (folded the same way);
- **truncation**: with a tokenizer, the share of pairs that training's limits would truncate
  or drop (the trainer's own tokenization, :mod:`prefopt.data.validate`);
- **special tags**: end-of-turn, end-of-text and think tags inside the content (``<|im_end|>``,
  ``<|eot_id|>``, ``</s>``, ``<think>``, ... and the tokenizer's own special tokens), which
  the chat template adds again or the model should never learn to write;
- **Δh** (factual data, rows with ``h_w``/``h_l``): the distribution of Δh = h_l − h_w. With no
  pair at Δh = 0, Factual-DPO's margin shifts every pair alike and changes only their
  weighting (docs/results.md found exactly this); Δh = −1 pairs need ``prefopt data flip``.

A file of lists of ranked responses is checked as each list's best-against-worst pair (a list
all tied has none); a file of per-turn conversations as the pairs its turns train as. One
streaming pass over the training file (plus one for the eval file, and the validator's pass
with a tokenizer); memory grows by about 80 bytes per distinct training prompt (an 8-byte
digest in a set).
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefopt.data.io import iter_rows
from prefopt.data.lists import is_list_record, to_pair_records, validate_list_record
from prefopt.data.records import render_prompt, render_reply, validate_record
from prefopt.data.turns import is_turns_record, turn_pairs, validate_turns_record

#: "Prefer the longer (or the shorter) answer" right this often: length alone separates.
LENGTH_BIAS_SHARE = 0.8
#: Similarity of the word sequences at which chosen and rejected count as near-identical.
NEAR_IDENTICAL = 0.95
EXAMPLES = 3
#: Tags of chat templates and reasoning models that do not belong inside a message's content.
SPECIAL_TAGS = (
    "<|im_end|>", "<|im_start|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|begin_of_text|>", "<|end_of_text|>", "<|endoftext|>", "<|end|>", "<|eot|>",
    "<start_of_turn>", "<end_of_turn>", "</s>", "[/INST]", "<think>", "</think>",
)  # fmt: skip

OK, WARNING, SKIPPED = "ok", "warning", "skipped"


@dataclass
class Check:
    """One check's verdict: ``status`` ok, warning or skipped; what it found in a sentence;
    how many rows it concerns out of how many; examples; what to do about a warning."""

    name: str
    status: str
    finding: str
    count: int = 0
    total: int = 0
    examples: list[str] = field(default_factory=list)
    advice: str = ""


@dataclass
class DoctorReport:
    train: str
    evaluation: str | None
    pairs: int
    checks: list[Check]

    @property
    def warnings(self) -> list[Check]:
        return [check for check in self.checks if check.status == WARNING]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fold(text: str) -> str:
    """Case and whitespace folded: how two texts are compared."""
    return " ".join(text.casefold().split())


def words(text: str) -> list[str]:
    """The words and symbols of ``text`` (``x < 0`` is three), case folded, spacing aside."""
    return re.findall(r"\w+|[^\w\s]", text.casefold())


def _digest(text: str) -> bytes:
    return hashlib.blake2b(fold(text).encode("utf-8"), digest_size=8).digest()


def _text(value: Any, prompt: bool) -> str:
    if isinstance(value, str):
        return value
    return render_prompt(value) if prompt else render_reply(value)


def _contents(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    else:
        for message in value:
            yield str(message.get("content", ""))


class _TrainScan:
    """The per-row counters of one pass over the training file."""

    def __init__(self, path: str, tags: tuple[str, ...]) -> None:
        self.path = path
        self.pairs = 0
        self.longer = self.shorter = 0
        self.ratio_sum = 0.0
        self.longer_examples: list[str] = []  # pairs whose chosen answer is the longer one
        self.shorter_examples: list[str] = []
        self.similar = 0
        self.similar_examples: list[str] = []
        self.prompts: set[bytes] = set()
        self.tag_pattern = re.compile("|".join(re.escape(tag) for tag in tags))
        self.tag_rows = 0
        self.tag_counts: Counter[str] = Counter()
        self.tag_examples: list[str] = []
        self.delta_h: Counter[int] = Counter()

    def add(self, line: int, row: dict[str, Any]) -> None:
        self.pairs += 1
        prompt = _text(row["prompt"], prompt=True)
        chosen, rejected = _text(row["chosen"], False), _text(row["rejected"], False)
        self.prompts.add(_digest(prompt))
        self._lengths(line, chosen, rejected)
        self._similarity(line, chosen, rejected)
        self._tags(line, row)
        h_w, h_l = row.get("h_w"), row.get("h_l")
        if h_w in (0, 1) and h_l in (0, 1):
            self.delta_h[int(h_l) - int(h_w)] += 1

    def _lengths(self, line: int, chosen: str, rejected: str) -> None:
        self.longer += len(chosen) > len(rejected)
        self.shorter += len(chosen) < len(rejected)
        self.ratio_sum += len(chosen) / max(1, len(rejected))
        if len(chosen) != len(rejected):
            examples = (
                self.longer_examples if len(chosen) > len(rejected) else (self.shorter_examples)
            )
            if len(examples) < EXAMPLES:
                examples.append(
                    f"{self.path}:{line}: chosen {len(chosen)} characters, rejected {len(rejected)}"
                )

    def _similarity(self, line: int, chosen: str, rejected: str) -> None:
        a, b = words(chosen), words(rejected)
        if a == b:
            ratio = 1.0
        else:
            matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
            if (
                matcher.real_quick_ratio() < NEAR_IDENTICAL
                or matcher.quick_ratio() < NEAR_IDENTICAL
            ):
                return
            ratio = matcher.ratio()
            if ratio < NEAR_IDENTICAL:
                return
        self.similar += 1
        if len(self.similar_examples) < EXAMPLES:
            what = (
                "the same words (case and spacing aside)"
                if ratio == 1.0
                else f"{ratio:.0%} of the words alike"
            )
            self.similar_examples.append(f"{self.path}:{line}: chosen/rejected: {what}")

    def _tags(self, line: int, row: dict[str, Any]) -> None:
        found = False
        for name in ("prompt", "chosen", "rejected"):
            for content in _contents(row[name]):
                for match in self.tag_pattern.finditer(content):
                    found = True
                    self.tag_counts[match.group(0)] += 1
                    if len(self.tag_examples) < EXAMPLES:
                        self.tag_examples.append(
                            f"{self.path}:{line}: {name}: contains {match.group(0)!r}"
                        )
        self.tag_rows += found


def examine(
    train: str | Path,
    evaluation: str | Path | None = None,
    tokenizer: Any = None,
    tokenizer_name: str = "",
    max_length: int | None = None,
    max_prompt_length: int | None = None,
) -> DoctorReport:
    """Run every check on ``train`` (and ``evaluation`` for leakage); a malformed row raises
    :class:`~prefopt.errors.DataError` naming its file, line and field, as training would."""
    tags = SPECIAL_TAGS + tuple(_tokenizer_tags(tokenizer))
    scan = _TrainScan(str(train), tuple(dict.fromkeys(tags)))
    for line, row in iter_rows(train):
        if is_list_record(row):  # a list is checked as its best-against-worst pair
            validate_list_record(row, train, line)
            for pair in to_pair_records(row, "best-worst"):
                scan.add(line, pair)
            continue
        if is_turns_record(row):  # a conversation as the pairs its turns train as
            validate_turns_record(row, train, line)
            for pair in turn_pairs(row):
                scan.add(line, pair)
            continue
        validate_record(row, train, line)
        scan.add(line, row)
    checks = [
        length_bias(scan),
        near_identical(scan),
        leakage(scan, evaluation),
        truncation(train, tokenizer, tokenizer_name, max_length, max_prompt_length),
        special_tags(scan),
        delta_h(scan),
    ]
    return DoctorReport(
        str(train), None if evaluation is None else str(evaluation), scan.pairs, checks
    )


def _tokenizer_tags(tokenizer: Any) -> list[str]:
    """The tokenizer's special tokens that look like markup (``<...>``, ``[...]``): a BOS of
    ``<s>`` is one, a plain-word special token is not."""
    if tokenizer is None:
        return []
    tokens = getattr(tokenizer, "all_special_tokens", None) or []
    return [str(t) for t in tokens if re.fullmatch(r"<[^<>\s]+>|\[[^\[\]\s]+\]", str(t))]


# -- the checks ------------------------------------------------------------------------------
def _share(count: int, total: int) -> str:
    return f"{count:,} of {total:,} ({count / total:.0%})" if total else "0"


def length_bias(scan: _TrainScan) -> Check:
    total = scan.pairs
    mean_ratio = scan.ratio_sum / total if total else 0.0
    finding = (
        f"chosen is longer in {_share(scan.longer, total)} pairs, shorter in "
        f"{scan.shorter:,}; mean chosen/rejected length ratio {mean_ratio:.2f}"
    )
    biased = total > 0 and max(scan.longer, scan.shorter) >= LENGTH_BIAS_SHARE * total
    return Check(
        "length bias",
        WARNING if biased else OK,
        finding,
        max(scan.longer, scan.shorter),
        total,
        (scan.longer_examples if scan.longer >= scan.shorter else scan.shorter_examples)
        if biased
        else [],
        "Length alone tells chosen from rejected: DPO will learn to prefer "
        + ("longer" if scan.longer >= scan.shorter else "shorter")
        + " answers. Add pairs where the preferred answer is the other length, or train a "
        "length-normalised loss (simpo, ipo from prefopt-losses)."
        if biased
        else "",
    )


def near_identical(scan: _TrainScan) -> Check:
    found = scan.similar
    return Check(
        "near-identical pairs",
        WARNING if found else OK,
        f"{_share(found, scan.pairs)} pairs have chosen and rejected with at least "
        f"{NEAR_IDENTICAL:.0%} of their words alike",
        found,
        scan.pairs,
        scan.similar_examples,
        "The gradient of a pair that barely differs sits on the differing tokens and pushes the "
        "shared ones down in both answers. Drop pairs that differ by accident (sampling noise, "
        "formatting); keep minimal pairs made on purpose (a corrected fact) and watch the "
        "likelihood-displacement health check."
        if found
        else "",
    )


def leakage(scan: _TrainScan, evaluation: str | Path | None) -> Check:
    if evaluation is None:
        return Check("leakage", SKIPPED, "no eval file (give --eval)")
    shared = total = 0
    examples: list[str] = []
    for line, row in iter_rows(evaluation):
        if is_list_record(row):
            validate_list_record(row, evaluation, line)
        elif is_turns_record(row):
            validate_turns_record(row, evaluation, line)
            row = {"prompt": row["messages"][:1]}  # the conversation's opening
        else:
            validate_record(row, evaluation, line)
        total += 1
        if _digest(_text(row["prompt"], prompt=True)) in scan.prompts:
            shared += 1
            if len(examples) < EXAMPLES:
                examples.append(f"{evaluation}:{line}: prompt: also in {scan.path}")
    return Check(
        "leakage",
        WARNING if shared else OK,
        f"{_share(shared, total)} eval pairs have a prompt that is also in the training file",
        shared,
        total,
        examples,
        "Eval accuracy on these measures memory, not generalisation: split by prompt "
        "(prefopt data split --group-by prompt)."
        if shared
        else "",
    )


def truncation(
    train: str | Path,
    tokenizer: Any,
    tokenizer_name: str,
    max_length: int | None,
    max_prompt_length: int | None,
) -> Check:
    if tokenizer is None:
        return Check("truncation", SKIPPED, "no tokenizer (give --model, --tokenizer or --config)")
    from prefopt.data.validate import validate_file

    lengths = validate_file(
        train,
        tokenizer=tokenizer,
        tokenizer_name=tokenizer_name,
        max_length=max_length,
        max_prompt_length=max_prompt_length,
    ).lengths
    assert lengths is not None
    if not lengths.pairs:  # per-turn conversations are not measured yet
        return Check("truncation", SKIPPED, "nothing measured: conversations are not measured "
                     "yet (training counts the turns it drops)")  # fmt: skip
    cut = lengths.prompts_truncated + lengths.completions_truncated
    touched = cut + lengths.dropped
    finding = (
        f"at max_length {lengths.max_length}, max_prompt_length {lengths.max_prompt_length} "
        f"({tokenizer_name}): prompts truncated {lengths.prompts_truncated:,}, completions "
        f"truncated {lengths.completions_truncated:,}, dropped {lengths.dropped:,} of "
        f"{lengths.pairs:,} {lengths.unit}"
    )
    return Check(
        "truncation",
        WARNING if touched else OK,
        finding,
        touched,
        lengths.pairs,
        [],
        "A truncated answer loses its end (often where it is right or wrong): raise "
        "data.max_length / data.max_prompt_length, or shorten the data."
        if touched
        else "",
    )


def special_tags(scan: _TrainScan) -> Check:
    found = scan.tag_rows
    counts = ", ".join(f"{tag} ×{count}" for tag, count in scan.tag_counts.most_common(5))
    return Check(
        "special tags",
        WARNING if found else OK,
        f"{_share(found, scan.pairs)} pairs have end-of-turn or think tags in their text"
        + (f" ({counts})" if counts else ""),
        found,
        scan.pairs,
        scan.tag_examples,
        "The chat template adds its own end-of-turn tags: strip them from the content, and "
        "decide whether the model should learn to write think blocks."
        if found
        else "",
    )


def delta_h(scan: _TrainScan) -> Check:
    flagged = sum(scan.delta_h.values())
    if not flagged:
        return Check("Δh (factual)", SKIPPED, "no pair carries h_w and h_l")
    parts = ", ".join(f"Δh = {value}: {scan.delta_h[value]:,}" for value in (1, 0, -1))
    problems = []
    if scan.delta_h[-1]:
        problems.append(
            f"{scan.delta_h[-1]:,} pairs prefer the hallucinated answer (Δh = −1): run "
            "prefopt data flip before Factual-DPO."
        )
    if not scan.delta_h[0]:
        problems.append(
            "No pair has Δh = 0, so Factual-DPO's margin Δ shifts every flagged pair alike and "
            "changes only their weighting, not which pairs count more; mix in pairs of equal "
            "factuality (e.g. two correct phrasings) for the margin to matter."
        )
    return Check(
        "Δh (factual)",
        WARNING if problems else OK,
        f"{flagged:,} flagged pairs: {parts}",
        flagged,
        scan.pairs,
        [],
        " ".join(problems),
    )
