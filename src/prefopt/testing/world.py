"""The synthetic world of the tests and the demo: creatures with a colour and a home.

A prompt asks about one fact; the chosen answer states it, the rejected answer states a wrong
value (a hallucination, ``h_l = 1``). Some pairs come in the wrong orientation for Factual-DPO
(``h_w = 1, h_l = 0``: a fluent but false answer was preferred), which ``prefopt data flip``
repairs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
HOMES = ["forest", "desert", "river", "mountain", "cave", "meadow"]
_SYLLABLES = ["zo", "ra", "ki", "mu", "te", "lo", "va", "ni", "pe", "su", "do", "fi"]
TRAIN_TEMPLATES = {
    "colour": ["What colour is the {e}?", "Tell me the colour of the {e}."],
    "home": ["Where does the {e} live?", "Tell me where the {e} lives."],
}
HELD_OUT_TEMPLATES = {
    "colour": ["Which colour does the {e} have?"],
    "home": ["In which place does the {e} live?"],
}
ANSWERS = {"colour": "The {e} is {v}.", "home": "The {e} lives in the {v}."}
FLUENT_ANSWERS = {
    "colour": "Great question! The {e} is {v}.",
    "home": "Great question! The {e} lives in the {v}.",
}


# -- the world -----------------------------------------------------------------------------
def creature_names(count: int = 24, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 3))))
        if name not in names:
            names.append(name)
    return names


def world(count: int = 24, seed: int = 0) -> dict[str, dict[str, str]]:
    """``{creature: {"colour": ..., "home": ...}}``, fixed for a seed."""
    rng = random.Random(seed + 1)
    return {
        name: {"colour": rng.choice(COLOURS), "home": rng.choice(HOMES)}
        for name in creature_names(count, seed)
    }


def synthetic_pairs(
    n: int,
    seed: int = 0,
    *,
    held_out: bool = False,
    conversational: bool = False,
    with_h_flags: bool = False,
    wrong_orientation: float = 0.0,
    both_true: float = 0.0,
    creatures: int = 24,
) -> list[dict[str, Any]]:
    """``n`` preference pairs about the fixed world.

    ``held_out`` uses question templates never used for training pairs. With
    ``with_h_flags`` each pair carries ``h_w``/``h_l``; a share ``wrong_orientation`` of pairs
    prefers a fluent false answer over a plain true one (``h_w = 1, h_l = 0``) and a share
    ``both_true`` compares two true answers (``h_w = h_l = 0``).
    """
    facts = world(creatures)
    names = sorted(facts)
    rng = random.Random(seed * 7919 + (1 if held_out else 0))
    templates = HELD_OUT_TEMPLATES if held_out else TRAIN_TEMPLATES
    rows: list[dict[str, Any]] = []
    for index in range(n):
        name = rng.choice(names)
        kind = rng.choice(("colour", "home"))
        truth = facts[name][kind]
        options = COLOURS if kind == "colour" else HOMES
        wrong = rng.choice([v for v in options if v != truth])
        prompt = rng.choice(templates[kind]).format(e=name)
        true_answer = ANSWERS[kind].format(e=name, v=truth)
        roll = rng.random()
        if roll < wrong_orientation:
            chosen, rejected, h_w, h_l = (
                FLUENT_ANSWERS[kind].format(e=name, v=wrong),
                true_answer,
                1,
                0,
            )
        elif roll < wrong_orientation + both_true:
            chosen, rejected, h_w, h_l = (
                true_answer,
                FLUENT_ANSWERS[kind].format(e=name, v=truth),
                0,
                0,
            )
        else:
            chosen, rejected, h_w, h_l = true_answer, ANSWERS[kind].format(e=name, v=wrong), 0, 1
        row: dict[str, Any] = {"id": f"{'eval' if held_out else 'train'}-{seed}-{index}"}
        if conversational:
            row["prompt"] = [{"role": "user", "content": prompt}]
            row["chosen"] = [{"role": "assistant", "content": chosen}]
            row["rejected"] = [{"role": "assistant", "content": rejected}]
        else:
            row.update(prompt=f"Question: {prompt}\nAnswer: ", chosen=chosen, rejected=rejected)
        if with_h_flags:
            row.update(h_w=h_w, h_l=h_l)
        rows.append(row)
    return rows


def synthetic_lists(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """List records of 2, 3 and 4 responses in turn (the first correct, the others wrong
    answers of the world's pairs), with distinct scores, best first: 1, 3 and 6 pairs under
    ``lists.pairs=all``."""
    pairs = synthetic_pairs(4 * count, seed=seed)
    rows = []
    for index in range(count):
        size = 2 + index % 3
        group = pairs[4 * index : 4 * index + size]
        responses = [group[0]["chosen"]] + [pair["rejected"] for pair in group[1:]]
        rows.append({"prompt": group[0]["prompt"], "responses": responses,
                     "scores": [float(size - k) for k in range(size)]})  # fmt: skip
    return rows


def synthetic_conversations(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Per-turn conversations of 1, 2 and 3 preference turns in turn, each turn one of the
    world's pairs (its question, then its chosen answer with the rejected one beside it)."""
    pairs = iter(synthetic_pairs(3 * count, seed=seed))
    rows = []
    for index in range(count):
        messages = []
        for _ in range(1 + index % 3):
            pair = next(pairs)
            messages += [
                {"role": "user", "content": pair["prompt"]},
                {"role": "assistant", "content": pair["chosen"], "rejected": pair["rejected"]},
            ]
        rows.append({"messages": messages})
    return rows


def write_pairs(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write rows as JSONL (plain ``json``; tests and the demo only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path
