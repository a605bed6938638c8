"""``python -m torchpalette`` runs the command line."""

from .cli import run

run()
