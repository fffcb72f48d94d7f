"""Lists of ranked responses and per-turn conversations in a run: their datasets, and the
pairs a pair loss takes from one forward over whole lists (per-turn batches are ordered as
pairs already, :mod:`prefopt.data.turns`).

A list batch (:class:`~prefopt.data.list_collate.ListCollator`) yields one log-prob per
response. :func:`list_preference_batch` picks the ``(better, worse)`` index pairs of every list
(``lists.pairs``: best-worst, best-rest or all; tied responses form none) and hands the loss a
:class:`~prefopt.api.PreferenceBatch` of those pairs, so that every registered pair loss
trains on lists unchanged: the forward ran once per list, not once per pair. A list's
hallucination flags become each pair's ``h_w``/``h_l`` (Factual-DPO's margin then applies to
the pairs whose flags differ), and its score gap ``score_gap``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from prefopt.api import LossOutput, PreferenceBatch, ResponseLists
from prefopt.data.lists import pairs_of
from prefopt.data.lists import quality as quality_of
from prefopt.data.samples import SampleDataset
from prefopt.errors import UsageError

if TYPE_CHECKING:
    from prefopt.training.stages import Run

log = logging.getLogger("prefopt")


class ListDataset(SampleDataset):
    """Tokenized lists of ranked responses as a map-style dataset."""

    kind = "lists"


def source_kind(source: str, split: str) -> str:
    """``pairs``, ``lists`` or ``conversations``: what the first record of a data source is."""
    from prefopt.data.io import load_rows
    from prefopt.data.kinds import record_kind

    for _, row in load_rows(source, split=split):
        return record_kind(row)
    return "pairs"


class TurnsDataset(SampleDataset):
    """Tokenized per-turn conversations as a map-style dataset."""

    kind = "conversations"


def load_turns_dataset(
    source: str, split: str, tokenizer: Any, run: Run, progress: bool
) -> tuple[TurnsDataset, int]:
    """Read, validate and tokenize a source of per-turn conversations (:mod:`prefopt.data.turns`):
    each preference turn trains as a pair, all turns of a conversation in one row."""
    from prefopt.data.io import load_rows
    from prefopt.data.kinds import check_kind
    from prefopt.data.tokenize import TokenizationSettings
    from prefopt.data.turns import tokenize_turns, validate_turns_record
    from prefopt.training.callbacks import TaskProgress

    config = run.config
    if run.spec.extra_columns:
        raise UsageError(
            f"{source}: algorithm '{run.spec.name}' needs {', '.join(run.spec.extra_columns)}, "
            "which per-turn conversations do not carry"
        )
    rows = []
    for line, row in load_rows(source, split=split):
        check_kind(row, "conversations", source, line)
        validate_turns_record(row, source, line)
        rows.append((line, row))
    settings = TokenizationSettings(config.data.max_length, config.data.max_prompt_length)
    with TaskProgress(f"tokenize {source}", unit="turns", enabled=progress) as shown:
        conversations, report = tokenize_turns(rows, tokenizer, settings, source)
        shown.count = report.pairs
    if report.dropped:
        log.warning("%s: %d turns left out: no room after their context at data.max_length",
                    source, report.dropped)  # fmt: skip
    if not conversations:
        raise UsageError(f"{source}: no turn left to train on; raise data.max_length")
    for index, item in enumerate(conversations):
        item.index = index
    return TurnsDataset(conversations), report.dropped


def load_list_dataset(
    source: str, split: str, tokenizer: Any, run: Run, progress: bool
) -> tuple[ListDataset, int]:
    """Read, validate and tokenize a source of list records."""
    from prefopt.data.io import load_rows
    from prefopt.data.kinds import check_kind
    from prefopt.data.list_tokenize import tokenize_lists
    from prefopt.data.lists import validate_list_record
    from prefopt.data.tokenize import TokenizationSettings
    from prefopt.training.callbacks import TaskProgress

    config = run.config
    _refuse_gap_weight_of_whole_lists(run)
    rows = []
    for line, row in load_rows(source, split=split):
        check_kind(row, "lists", source, line)
        validate_list_record(row, source, line)
        rows.append((line, row))
    _check_columns(run, source, rows)
    tied = [line for line, row in rows if not pairs_of(quality_of(row), config.lists.pairs)]
    if tied:
        log.warning("%s: %d lists whose responses are all tied give no pair; left out (line %d "
                    "first)", source, len(tied), tied[0])  # fmt: skip
        left_out = set(tied)
        rows = [(line, row) for line, row in rows if line not in left_out]
    settings = TokenizationSettings(config.data.max_length, config.data.max_prompt_length)
    with TaskProgress(f"tokenize {source}", unit="lists", enabled=progress) as shown:
        lists, report = tokenize_lists(shown.counting(rows), tokenizer, settings, source)
    if not lists:
        raise UsageError(f"{source}: no list left to train on (all tied, or dropped by "
                         "truncation: raise data.max_length)")  # fmt: skip
    for index, item in enumerate(lists):
        item.index = index
    return ListDataset(lists), report.dropped


def _refuse_gap_weight_of_whole_lists(run: Run) -> None:
    """``lists.weight=gap`` weighs a loss's pairs; a loss over whole rankings (``dpo-pl``,
    ``lipo``: its ``whole_lists``) has none, and weighing its shares would rescale it by the
    pairing."""
    if run.config.lists.weight != "gap":
        return
    if getattr(run.spec.build_loss(run.config.algorithm), "whole_lists", False):
        raise UsageError(
            f"lists.weight=gap weighs the pairs of a pair loss; '{run.spec.name}' ranks whole "
            "lists and has no pairs to weigh: leave lists.weight at none"
        )


LIST_COLUMNS = ("h_w", "h_l", "score_gap")


def _check_columns(run: Run, source: str, rows: list[tuple[int, dict[str, Any]]]) -> None:
    """The algorithm's extra columns must be ones a list gives its pairs: ``h_w``/``h_l``
    (from ``h``, on every list) and ``score_gap``."""
    from prefopt.errors import DataError

    needed = tuple(run.spec.extra_columns)
    unknown = [name for name in needed if name not in LIST_COLUMNS]
    if unknown:
        raise UsageError(
            f"{source}: algorithm '{run.spec.name}' needs {', '.join(unknown)}, which the pairs "
            f"of a list do not carry (they carry {', '.join(LIST_COLUMNS)})"
        )
    if {"h_w", "h_l"} & set(needed):
        for line, row in rows:
            if "h" not in row:
                raise DataError(source, line, "h", f"missing field (algorithm "
                                f"'{run.spec.name}' needs each response's flag)")  # fmt: skip


def list_preference_batch(
    logps: Any, lengths: Any, reference_logps: Any, inputs: dict[str, Any]
) -> PreferenceBatch:
    """The pairs of a list batch (see the module docstring) as a :class:`PreferenceBatch`; the
    collator chose them (``pair_better``/``pair_worse``) from the exact quality values."""
    device = logps.device
    better = inputs["pair_better"].to(device)
    worse = inputs["pair_worse"].to(device)
    extras: dict[str, Any] = {"score_gap": inputs["pair_gap"].to(device).float()}
    flags = inputs.get("flags")
    if flags is not None:
        flags = flags.to(device)
        extras["h_w"], extras["h_l"] = flags[better], flags[worse]
    return PreferenceBatch(
        policy_chosen_logps=logps[better],
        policy_rejected_logps=logps[worse],
        reference_chosen_logps=None if reference_logps is None else reference_logps[better],
        reference_rejected_logps=None if reference_logps is None else reference_logps[worse],
        chosen_lengths=lengths[better],
        rejected_lengths=lengths[worse],
        extras=extras,
        lists=ResponseLists(
            policy_logps=logps,
            reference_logps=reference_logps,
            lengths=lengths,
            quality=-inputs["list_ranks"].to(device).to(logps.dtype),
            offsets=inputs["list_offsets"].to(device),
            pair_list=inputs["pair_sample"].to(device),
        ),
    )


def gap_weighted(output: LossOutput, batch: PreferenceBatch) -> LossOutput:
    """``lists.weight: gap``: the loss as the mean of the pairs' losses weighted by their
    score gaps (and the loss's own weights)::

        loss = Σ_i g_i·w_i·ℓ_i / Σ_i g_i·w_i

    with ``ℓ`` the loss's ``per_pair`` and ``w`` its ``weights``. This replaces the loss's own
    reduction (a filtering loss's normalisation included); under data parallelism each process
    normalises by its own pairs."""
    gap = batch.extras["score_gap"].to(output.per_pair.dtype)
    weights = output.weights.to(output.per_pair.dtype) * gap
    total = weights.sum()
    loss = (weights * output.per_pair).sum() / total.clamp_min(1e-12)
    return LossOutput(
        loss=loss,
        per_pair=output.per_pair,
        weights=weights,
        metrics=output.metrics,
        chosen_rewards=output.chosen_rewards,
        rejected_rewards=output.rejected_rewards,
    )
