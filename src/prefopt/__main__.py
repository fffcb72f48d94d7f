"""``python -m prefopt`` runs the command-line interface."""

from prefopt.cli.main import main

if __name__ == "__main__":
    main()
