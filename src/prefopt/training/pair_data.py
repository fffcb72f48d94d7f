"""The preference data of a run: read, validate and tokenize a source into pairs, cached by
content (:mod:`prefopt.data.prep_cache`), served to the trainer as a map-style dataset."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefopt.api import AlgorithmSpec
from prefopt.config import RunConfig
from prefopt.data.samples import SampleDataset
from prefopt.data.tokenize import TokenizationSettings, TokenizedPair
from prefopt.errors import UsageError

if TYPE_CHECKING:
    from prefopt.training.reference import Reference
    from prefopt.training.stages import Run, RunData

log = logging.getLogger("prefopt")


class PairDataset(SampleDataset):
    """Tokenized pairs as a map-style dataset."""

    kind = "pairs"


def load_pairs(
    source: str,
    split: str,
    tokenizer: Any,
    config: RunConfig,
    spec: AlgorithmSpec,
    progress: bool = False,
) -> tuple[list[TokenizedPair], int]:
    """Read, validate and tokenize one data source; returns the pairs and the dropped count.

    A local file's prepared pairs are cached by content (``data.prep_cache``)."""
    from prefopt.data.io import load_rows
    from prefopt.data.kinds import check_kind
    from prefopt.data.prep_cache import prepare_pairs
    from prefopt.data.records import validate_record

    def read_rows() -> list[tuple[int, dict[str, Any]]]:
        rows = []
        for line, row in load_rows(source, split=split):
            check_kind(row, "pairs", source, line)
            validate_record(row, source, line, spec.extra_columns)
            rows.append((line, row))
        if not rows:
            raise UsageError(f"{source}: no preference pairs found")
        if spec.validate_records is not None:
            spec.validate_records(rows, source)
        return rows

    from prefopt.training.callbacks import TaskProgress

    settings = TokenizationSettings(config.data.max_length, config.data.max_prompt_length)
    label = f"tokenize {source}" + ("" if Path(source).exists() else f" ({split})")  # hub split
    with TaskProgress(label, enabled=progress) as shown:
        pairs, report, cached = prepare_pairs(
            source,
            split,
            tokenizer,
            settings,
            spec.extra_columns,
            lambda: shown.counting(read_rows()),
            validation=spec.name,
            use_cache=config.data.prep_cache,
            root=config.reference.cache_dir,
        )
        if cached:
            shown.count, shown.note = report.pairs, "from the prep cache"
    if report.dropped:
        log.warning(
            "%s: dropped %d of %d pairs left without completion tokens after truncation",
            source,
            report.dropped,
            report.pairs + report.dropped,
        )
    if not pairs:
        raise UsageError(f"{source}: every pair was dropped by truncation; raise data.max_length")
    return pairs, report.dropped


def load_pair_dataset(
    source: str, split: str, tokenizer: Any, run: Run, progress: bool
) -> tuple[Any, int]:
    """:func:`load_pairs` as a dataset whose pairs know their place in it (``pair_index``: the
    first epoch's reference fills the cache by it, see :mod:`prefopt.training.reference_fill`);
    a source of lists of ranked responses or of per-turn conversations as the dataset of
    :mod:`prefopt.training.list_data`."""
    from prefopt.training.list_data import load_list_dataset, load_turns_dataset, source_kind

    kind = source_kind(source, split)
    if kind != "pairs":
        load = load_list_dataset if kind == "lists" else load_turns_dataset
        return load(source, split, tokenizer, run, progress)
    _note_list_settings(run.config, source)
    pairs, dropped = load_pairs(source, split, tokenizer, run.config, run.spec, progress)
    for index, pair in enumerate(pairs):
        pair.index = index
    return PairDataset(pairs), dropped


def _note_list_settings(config: Any, source: str) -> None:
    """``lists.pairs`` and ``lists.weight`` shape lists of responses; on pairs they do nothing,
    which the user who set them should hear."""
    from prefopt.config import ListsConfig

    default = ListsConfig()
    changed = [
        f"lists.{name}={getattr(config.lists, name)}"
        for name in ("pairs", "weight")
        if getattr(config.lists, name) != getattr(default, name)
    ]
    if changed:
        log.warning("%s holds pairs: %s applies to lists of ranked responses and is ignored",
                    source, " and ".join(changed))  # fmt: skip


def build_preference_trainer(
    trainer_class: Any,
    run: Run,
    data: RunData,
    model: Any,
    reference: Reference | None,
    callbacks: list[Any],
) -> Any:
    """A :class:`~prefopt.training.trainer.PreferenceTrainer` (subclass) for ``run``: the
    collator of the layout the data and model allow, the algorithm's loss, the reference. The
    lean LM head is checked on the first pairs against the model's own logits (not under
    FSDP/DeepSpeed, where the weights are not whole or not on their device yet)."""
    from prefopt.data.collate import choose_layout, make_collator
    from prefopt.modeling.head_check import self_check

    config, spec = run.config, run.spec
    items, pad = data.train.samples, data.tokenizer.pad_token_id
    longest = max(config.data.pack_tokens, max(data.train.lengths))
    layout, why = choose_layout(config.data.layout, model, longest)
    if why:
        log.warning("data.layout=%s: %s; using the padded layout", config.data.layout, why)
    if data.train.kind == "lists":
        from prefopt.data.list_collate import ListCollator

        collator: Any = ListCollator(layout, pad, config.data.pack_tokens, config.lists.pairs)
    elif data.train.kind == "conversations":
        from prefopt.data.turns import TurnCollator

        collator = TurnCollator(layout, pad, config.data.pack_tokens)
    else:
        collator = make_collator(layout, pad, spec.extra_columns, config.data.pack_tokens)
    trainer = trainer_class(
        model=model,
        args=run.args,
        train_dataset=data.train,
        eval_dataset=data.evaluation,
        data_collator=collator,
        processing_class=data.tokenizer,
        make_loss=functools.partial(spec.make_loss, config.algorithm),
        reference=reference,
        extra_columns=spec.extra_columns,
        list_weight=config.lists.weight,
        callbacks=callbacks,
    )
    if not (trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled):
        frozen = None if reference is None else reference.model
        self_check([trainer.model, frozen], collator(items[:2]))
    return trainer
