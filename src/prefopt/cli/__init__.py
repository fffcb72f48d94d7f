"""prefopt's command-line interface (Typer). Nothing heavy is imported here, so ``prefopt --help``
answers at once; torch and transformers are imported inside the commands that need them."""
