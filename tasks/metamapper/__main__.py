"""``python -m metamapper``: the same as the ``metamapper`` command."""

from metamapper.cli import main

main()
