"""``prefopt merge``: fold a trained adapter into its base and save one self-contained model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefopt.cli.common import State, TrustRemoteCodeOption, console, run_command
from prefopt.console import styled


@run_command
def merge(
    source: Annotated[
        Path,
        typer.Argument(
            help="A run folder or an adapter folder (adapter_config.json).", show_default=False
        ),
    ],
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-o", help="Where to save (default: <SOURCE>-merged)."),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            help="Base model to merge into, instead of the one the run recorded "
            "(hub id or folder; may itself be an adapter folder).",
        ),
    ] = None,
    dtype: Annotated[
        str,
        typer.Option(
            "--dtype",
            help="Dtype of the saved weights: auto (the base's own), float32, bfloat16, float16. "
            "Merging itself is always done in float32.",
        ),
    ] = "auto",
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing output folder.")
    ] = False,
    trust_remote_code: TrustRemoteCodeOption = False,
) -> None:
    """Merge a LoRA adapter into its full-precision base (also after 4-bit training) and save
    safetensors weights, the tokenizer and a model card. Follows SFT → DPO adapter chains."""
    from prefopt import workflows

    out = console()
    say = (lambda message: None) if State.quiet else out.print
    result = workflows.merge(
        source, output_dir, base=base, dtype=dtype, force=force, say=say,
        trust_remote_code=trust_remote_code, quiet=State.quiet,
    )  # fmt: skip
    out.print(
        styled(
            "merged model saved to [bold]{}[/] ({}M parameters, {}, base {})",
            result.output_dir,
            f"{result.parameters / 1e6:.2f}",
            result.dtype,
            result.base,
        ),
        markup=True,
    )
