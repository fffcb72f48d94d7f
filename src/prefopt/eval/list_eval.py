"""``prefopt eval MODEL --data LISTS``: lists of ranked responses, scored as training scores
them (:mod:`prefopt.data.list_tokenize`, one padded row per response), ranked by the implicit
rewards and compared with the true order (:mod:`prefopt.eval.list_metrics`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefopt.data.list_tokenize import TokenizedList
from prefopt.eval.list_metrics import ranking_metrics


def load_eval_lists(
    source: str, tokenizer: Any, max_length: int, max_prompt_length: int, split: str = "test"
) -> tuple[list[TokenizedList], int, list[dict[str, Any]]]:
    """Read, validate and tokenize a file of list records: the lists, the dropped count, and
    where each list comes from (``line``, and ``id`` when the record has one)."""
    from prefopt.data.io import load_rows
    from prefopt.data.kinds import check_kind
    from prefopt.data.list_tokenize import tokenize_lists
    from prefopt.data.lists import validate_list_record
    from prefopt.data.tokenize import TokenizationSettings
    from prefopt.errors import UsageError

    rows = []
    for line, row in load_rows(source, split=split):
        check_kind(row, "lists", source, line)
        validate_list_record(row, source, line)
        rows.append((line, row))
    settings = TokenizationSettings(max_length, max_prompt_length)
    lists: list[TokenizedList] = []
    origins: list[dict[str, Any]] = []
    dropped = 0
    for line, row in rows:  # one by one, so that each list kept knows its line
        kept, report = tokenize_lists([(line, row)], tokenizer, settings, source)
        dropped += report.dropped
        lists += kept
        origins += [{"line": line, **({"id": row["id"]} if "id" in row else {})}] * len(kept)
    if not lists:
        raise UsageError(f"{source}: every list was dropped by truncation; raise --max-length")
    return lists, dropped, origins


def response_logps(
    model: Any,
    lists: Sequence[TokenizedList],
    pad_token_id: int,
    batch_size: int = 16,
    on_batch: Any = None,
) -> list[list[float]]:
    """Every response's summed log-prob, list by list, in eval mode, ``batch_size`` lists a
    batch (padded rows, one per response), the first batch self-checked as pairs are
    (:func:`prefopt.eval.scoring.scored_batches`)."""
    from prefopt.data.list_collate import ListCollator
    from prefopt.eval.scoring import scored_batches

    out: list[list[float]] = []
    collator = ListCollator("padded", pad_token_id)
    for _, batch, logps in scored_batches(model, lists, collator, batch_size, on_batch):
        values = logps.float().cpu().tolist()
        offsets = batch["list_offsets"].tolist()
        out += [values[a:b] for a, b in zip(offsets, offsets[1:], strict=False)]
    return out


def list_results(
    policy: list[list[float]],
    reference: list[list[float]] | None,
    lists: Sequence[TokenizedList],
    beta: float,
    origins: Sequence[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ranking metrics and one row per list: its number (from 0), its ``line`` and
    ``id`` (``origins``), each response's reward and its true quality (higher is better: a
    score, or a rank negated)."""
    baseline = reference if reference is not None else [[0.0] * len(v) for v in policy]
    rewards = [
        [beta * (p - r) for p, r in zip(values, base, strict=True)]
        for values, base in zip(policy, baseline, strict=True)
    ]
    qualities = [item.quality for item in lists]
    origins = origins if origins is not None else [{}] * len(lists)
    rows = [
        {"list": index, **origin, "rewards": reward, "quality": quality}
        for index, (reward, quality, origin) in enumerate(
            zip(rewards, qualities, origins, strict=True)
        )
    ]
    return ranking_metrics(rewards, qualities), rows
