"""``python -m streams`` runs the ``streams`` console script."""

from streams.cli import main

main()
