"""The ``pfdist`` command line. Strings become functions here and nowhere below.

One module per group of commands, each registering on the shared ``app``; they are imported in
the order ``pfdist --help`` lists the commands.
"""

from __future__ import annotations

from pfdist.cli.common import app
from pfdist.cli import distance, protocol, distill, reproduce, models, runs, publish  # noqa: F401  (registers the commands)


def main() -> None:
    app()
