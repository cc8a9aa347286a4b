"""Command line: argument parsing and one error handler (``mi-align``).

:mod:`mi_align.cli.main` builds the parser and turns every :class:`~mi_align.errors.MiAlignError`
into one line and an exit code; one module per command group (:mod:`~mi_align.cli.erosion`,
:mod:`~mi_align.cli.steering`, :mod:`~mi_align.cli.finetune`) parses its options and calls
:mod:`mi_align.pipelines`.
"""

from mi_align.cli.main import main

__all__ = ["main"]
