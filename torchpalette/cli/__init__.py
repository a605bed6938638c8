"""The ``torchpalette`` command-line app, built on the public API only.

* :mod:`~torchpalette.cli.commands` — the argument parser and one short function per subcommand
  (shared argument types in :mod:`~torchpalette.cli.options`);
* ``quantize``: :mod:`~torchpalette.cli.quantize_cmd` (the run and its summary) and
  :mod:`~torchpalette.cli.quantize_args` (options) over :mod:`~torchpalette.cli.walk` (SRC),
  :mod:`~torchpalette.cli.plan` (names, resume), :mod:`~torchpalette.cli.record` (provenance),
  :mod:`~torchpalette.cli.dstdir` (DST's hidden folder), :mod:`~torchpalette.cli.decode`
  (bounded decode queue), :mod:`~torchpalette.cli.quantizers` (``tp.quantize`` per image),
  :mod:`~torchpalette.cli.pipeline` (overlap, failures) and :mod:`~torchpalette.cli.sink`
  (the output step: indexed PNGs, or any other format behind the same interface);
* :mod:`~torchpalette.cli.torchrun` — rank discovery and progress across ``torchrun`` ranks;
* :mod:`~torchpalette.cli.report` (analysis), :mod:`~torchpalette.cli.report_model` (its
  data), :mod:`~torchpalette.cli.report_html` (page),
  :mod:`~torchpalette.cli.report_assets` (inline CSS and script) and
  :mod:`~torchpalette.cli.figures` — the HTML report;
* :mod:`~torchpalette.cli.terminal` — colour swatches in a terminal;
* :mod:`~torchpalette.cli.palette_files` — hex, JSON, CSS and GIMP palette files.

The library never imports this package.
"""

from .commands import main, run

__all__ = ["main", "run"]
