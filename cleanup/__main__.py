"""``python -m cleanup`` runs the command line."""

from cleanup.cli.main import main

if __name__ == "__main__":
    main()
