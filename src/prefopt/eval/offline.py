"""``prefopt eval MODEL --data PAIRS``: score held-out pairs under a model and its reference.

MODEL is a merged folder, an adapter (or run) folder, or a hub id. The default reference is
the model the adapter was trained on (for an adapter, computed by switching the adapter off,
so the base is loaded once) or, for a folder written by ``prefopt merge``, the base recorded in
``prefopt_merge.json``. A hub id has no default reference: pass ``--ref``, or the rewards are
the policy's own log-probs (reference-free, reported as such).

Pairs (and per-turn conversations, and lists of responses) are tokenized exactly as in
training (:mod:`prefopt.eval.eval_data`) and scored with
:func:`prefopt.eval.scoring.pair_logps`, so offline margins equal the margins the loss saw.
Metric definitions: :mod:`prefopt.eval.metrics`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from prefopt.eval.eval_data import EvalData, load_eval_pairs
from prefopt.eval.metrics import PairScores, split_by, split_by_delta_h, summarize
from prefopt.modeling import merge as merging

RESULTS_FILE = "eval_results.json"
RESULTS_KIND = "prefopt.eval"
DEFAULT_BETA = 0.1


@dataclass
class ModelPlan:
    """What to load for one evaluation."""

    model: str
    chain: list[str]  # policy: [root, adapters...] (an adapter MODEL is the last element)
    adapter: bool  # the last element of ``chain`` is an adapter kept switchable
    reference: str | None  # None: reference-free
    reference_is_base: bool  # reference = the policy with its adapter switched off
    run: dict[str, Any] | None = None
    trust_remote_code: bool = False


@dataclass
class EvalOutput:
    results: dict[str, Any]
    per_pair: list[dict[str, Any]] = field(default_factory=list)
    #: Where the results JSON was written (``prefopt.evaluate`` writes it).
    results_path: Path | None = None


def plan_models(
    model: str, ref: str | None = None, no_ref: bool = False, trust_remote_code: bool = False
) -> ModelPlan:
    """Decide the policy chain and the reference for ``model`` (see the module docstring)."""
    plan = _plan(model, ref, no_ref)
    plan.trust_remote_code = trust_remote_code
    return plan


def _plan(model: str, ref: str | None, no_ref: bool) -> ModelPlan:
    plan = _sources(model, ref, no_ref)
    from prefopt.modeling.gguf import split_gguf
    from prefopt.modeling.hub import check_hub_source

    # A hub id that is neither cached nor reachable: one line now, not a minute of retries.
    check_hub_source(split_gguf(plan.chain[0])[0])
    if plan.reference is not None and not plan.reference_is_base:
        check_hub_source(split_gguf(plan.reference)[0], what="reference model")
    return plan


def _sources(model: str, ref: str | None, no_ref: bool) -> ModelPlan:
    from prefopt.modeling.loading import check_model_source

    model = check_model_source(model)
    run = None
    if merging.is_adapter_folder(model):
        chain = merging.resolve_chain(model)
        default_ref: str | None = chain[-2]
        adapter = True
        run = merging.run_summary(merging.read_run_config(model))
    else:
        chain, adapter = [model], False
        record = merging.read_merge_record(model) if Path(model).is_dir() else None
        default_ref = record.get("base_model") if record else None
        run = record.get("run") if record else None
    if no_ref:
        return ModelPlan(model, chain, adapter, None, False, run)
    if ref is None:
        return ModelPlan(
            model, chain, adapter, default_ref, adapter and default_ref is not None, run
        )
    ref = check_model_source(ref, "reference model")
    same_as_base = adapter and _same(ref, chain[-2])
    return ModelPlan(model, chain, adapter, ref, same_as_base, run)


def _same(a: str, b: str) -> bool:
    if Path(a).exists() and Path(b).exists():
        return Path(a).resolve() == Path(b).resolve()
    return a == b


def load_policy(plan: ModelPlan, dtype: str) -> Any:
    """The policy model: a merged/plain model, or base + switchable adapter."""
    trust = plan.trust_remote_code
    if not plan.adapter:
        return merging.load_full_precision(plan.chain, trust, dtype=dtype)
    from peft import PeftModel

    base = merging.load_full_precision(plan.chain[:-1], trust, dtype=dtype)
    return PeftModel.from_pretrained(base, plan.chain[-1])


def load_reference(plan: ModelPlan, dtype: str) -> Any:
    assert plan.reference is not None
    chain = (
        merging.resolve_chain(plan.reference)
        if merging.is_adapter_folder(plan.reference)
        else [plan.reference]
    )
    return merging.load_full_precision(chain, plan.trust_remote_code, dtype=dtype)


# -- evaluation ----------------------------------------------------------------------------
def evaluate(
    model: str,
    data: str,
    ref: str | None = None,
    no_ref: bool = False,
    beta: float | None = None,
    length_normalize: bool = False,
    batch_size: int = 16,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    dtype: str = "float32",
    split: str = "test",
    progress: Callable[[int, str, int], Any] | None = None,
    say: Callable[[str], Any] | None = None,
    trust_remote_code: bool = False,
) -> EvalOutput:
    """Score ``data`` under ``model`` (and its reference); returns results and per-pair rows."""

    from prefopt.errors import UsageError

    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    say = say or (lambda message: None)
    plan = plan_models(model, ref, no_ref, trust_remote_code)
    run_config = merging.read_run_config(model) if plan.adapter else None
    data_config = (run_config or {}).get("data") or {}
    max_length = max_length or int(data_config.get("max_length") or 1024)
    max_prompt_length = max_prompt_length or int(data_config.get("max_prompt_length") or 512)
    if beta is None:
        beta = float(((plan.run or {}).get("hyperparameters") or {}).get("beta") or DEFAULT_BETA)
    if beta <= 0:
        raise UsageError(f"--beta must be > 0, got {beta}")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise UsageError(f"--dtype must be float32, bfloat16 or float16, got '{dtype}'")

    tokenizer = merging.load_tokenizer_for(plan.chain, plan.trust_remote_code)
    from prefopt.data.lists import is_list_source

    if is_list_source(data, split):
        if length_normalize:
            say("--length-normalize applies to pairs; lists are ranked by their summed rewards")
        return _evaluate_lists(
            plan, data, tokenizer, beta, batch_size, max_length, max_prompt_length, dtype,
            split, progress, say,
        )  # fmt: skip
    loaded = load_eval_pairs(data, tokenizer, max_length, max_prompt_length, split)
    if loaded.dropped and loaded.turns is not None:
        say(f"{loaded.dropped} turns dropped: no room after their context at --max-length")
    elif loaded.dropped:
        say(f"{loaded.dropped} pairs dropped: no completion tokens left after truncation")
    if plan.reference is None:
        say("no reference model: rewards are β·log π (reference-free); pass --ref to set one")

    from prefopt.eval.scoring import pair_logps

    pad = tokenizer.pad_token_id
    count = len(loaded.pairs)
    policy_scores, reference_scores = score_policy_and_reference(
        plan, dtype, count, progress,
        lambda model, tick: pair_logps(model, loaded.pairs, pad, batch_size, tick),
    )  # fmt: skip
    chosen, rejected = policy_scores
    ref_chosen, ref_rejected = reference_scores if reference_scores is not None else (None, None)

    flags = [loaded.rows[i][1] for i in loaded.row_index]
    scores = PairScores(
        chosen,
        rejected,
        ref_chosen,
        ref_rejected,
        [len(p.chosen_ids) for p in loaded.pairs],
        [len(p.rejected_ids) for p in loaded.pairs],
        h_w=[int(row["h_w"]) for row in flags] if loaded.has_h else None,
        h_l=[int(row["h_l"]) for row in flags] if loaded.has_h else None,
    )
    results = {
        **_about(plan, data, beta),
        "length_normalize": length_normalize,
        "max_length": max_length,
        "max_prompt_length": max_prompt_length,
        "pairs": count,
        "dropped": loaded.dropped,
        "run": plan.run,
        "metrics": summarize(scores, beta, length_normalize),
        "by_delta_h": split_by_delta_h(scores, beta, length_normalize),
    }
    if loaded.turns is not None:
        results["by_turn"] = split_by(loaded.turns, scores, beta, length_normalize)
    return EvalOutput(results, per_pair_rows(scores, loaded, beta))


def _evaluate_lists(
    plan: ModelPlan,
    data: str,
    tokenizer: Any,
    beta: float,
    batch_size: int,
    max_length: int,
    max_prompt_length: int,
    dtype: str,
    split: str,
    progress: Callable[[int, str, int], Any] | None,
    say: Callable[[str], Any],
) -> EvalOutput:
    """:func:`evaluate` for a file of lists of ranked responses (:mod:`prefopt.eval.list_eval`)."""

    from prefopt.eval.list_eval import list_results, load_eval_lists, response_logps

    lists, dropped, origins = load_eval_lists(data, tokenizer, max_length, max_prompt_length, split)
    if dropped:
        say(f"{dropped} lists dropped: no completion tokens left after truncation")
    if plan.reference is None:
        say("no reference model: rewards are β·log π (reference-free); pass --ref to set one")
    pad = tokenizer.pad_token_id
    scores, reference = score_policy_and_reference(
        plan, dtype, len(lists), progress,
        lambda model, tick: response_logps(model, lists, pad, batch_size, tick),
    )  # fmt: skip
    metrics, rows = list_results(scores, reference, lists, beta, origins)
    results = {
        **_about(plan, data, beta),
        "max_length": max_length,
        "max_prompt_length": max_prompt_length,
        "lists": len(lists),
        "dropped": dropped,
        "run": plan.run,
        "metrics": metrics,
    }
    return EvalOutput(results, rows)


def _about(plan: ModelPlan, data: str, beta: float) -> dict[str, Any]:
    """What every results file of ``prefopt eval`` begins with."""
    return {
        "kind": RESULTS_KIND,
        "model": plan.model,
        "reference": plan.reference,
        "data": data,
        "beta": beta,
    }


def score_policy_and_reference(
    plan: ModelPlan,
    dtype: str,
    count: int,
    progress: Callable[[int, str, int], Any] | None,
    score: Callable[[Any, Any], Any],
) -> tuple[Any, Any]:
    """``(policy scores, reference scores or None)``: ``score(model, tick)`` under the policy,
    then under the reference: the policy with its adapter switched off when the reference is
    its base (loaded once), else the reference model loaded after the policy is let go."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    policy = load_policy(plan, dtype).to(device)
    policy_scores = score(policy, _ticker(progress, "policy", count))
    if plan.reference is None:
        return policy_scores, None
    tick = _ticker(progress, "reference", count)
    if plan.reference_is_base:
        with policy.disable_adapter():
            return policy_scores, score(policy, tick)
    del policy
    return policy_scores, score(load_reference(plan, dtype).to(device), tick)


def _ticker(
    progress: Callable[[int, str, int], Any] | None, phase: str, total: int
) -> Callable[[int], Any] | None:
    if progress is None:
        return None
    return lambda done: progress(done, phase, total)


def per_pair_rows(scores: PairScores, loaded: EvalData, beta: float) -> list[dict[str, Any]]:
    """One row per scored pair: the four log-probs, lengths, margin and rewards."""
    rows = []
    for i, source_index in enumerate(loaded.row_index):
        line, record = loaded.rows[source_index]
        pc, pr = scores.policy_chosen[i], scores.policy_rejected[i]
        rc = scores.reference_chosen[i] if scores.reference_chosen is not None else None
        rr = scores.reference_rejected[i] if scores.reference_rejected is not None else None
        chosen_ratio = pc - (rc or 0.0)
        rejected_ratio = pr - (rr or 0.0)
        row: dict[str, Any] = {"line": line}
        if "id" in record:
            row["id"] = record["id"]
        row.update(
            policy_chosen_logps=pc,
            policy_rejected_logps=pr,
            reference_chosen_logps=rc,
            reference_rejected_logps=rr,
            chosen_length=scores.chosen_lengths[i],
            rejected_length=scores.rejected_lengths[i],
            margin=chosen_ratio - rejected_ratio,
            reward_chosen=beta * chosen_ratio,
            reward_rejected=beta * rejected_ratio,
            reward_margin=beta * (chosen_ratio - rejected_ratio),
        )
        if loaded.has_h:
            row["h_w"], row["h_l"] = int(record["h_w"]), int(record["h_l"])
        if loaded.turns is not None:
            row["turn"] = loaded.turns[i]
        rows.append(row)
    return rows


def default_results_path(model: str) -> Path:
    """``<MODEL>/eval_results.json`` for a local folder, else ``./eval_results.json``."""
    return Path(model) / RESULTS_FILE if Path(model).is_dir() else Path(RESULTS_FILE)


def write_json(path: str | Path, value: Any, force: bool) -> Path:
    """Write ``value`` as indented JSON, atomically; refuses to overwrite unless ``force``."""
    from prefopt.data.writing import atomic_writer

    with atomic_writer(path, force) as out:
        out.write(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    return Path(path)


@contextlib.contextmanager
def progress_bar(description: str, quiet: bool) -> Iterator[Callable[..., Any] | None]:
    """A rich progress bar on stderr; yields ``advance(n, phase=None)`` (``None`` when quiet)."""
    if quiet or os.environ.get("PREFOPT_NO_PROGRESS"):
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from prefopt.console import console

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console(stderr=True),
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def advance(count: int, phase: str | None = None, total: int | None = None) -> None:
            key = phase or description
            if key not in tasks:
                tasks[key] = bar.add_task(f"{description} {phase or ''}".strip(), total=total)
            bar.advance(tasks[key], count)

        yield advance
