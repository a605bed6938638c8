"""The ``torchpalette`` command-line app, built on the public API only.

* :mod:`~torchpalette.cli.commands` — the argument parser and one short function per subcommand;
* :mod:`~torchpalette.cli.folder` — the resumable folder pipeline behind ``quantize``;
* :mod:`~torchpalette.cli.torchrun` — rank discovery and progress across ``torchrun`` ranks;
* :mod:`~torchpalette.cli.report` (analysis), :mod:`~torchpalette.cli.report_html` (page),
  :mod:`~torchpalette.cli.report_assets` (inline CSS and script) and
  :mod:`~torchpalette.cli.figures` — the HTML report;
* :mod:`~torchpalette.cli.terminal` — colour swatches in a terminal;
* :mod:`~torchpalette.cli.palette_files` — hex, JSON, CSS and GIMP palette files.

The library never imports this package.
"""

from .commands import main

__all__ = ["main"]
