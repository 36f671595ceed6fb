"""``python -m pfdist.cli``: the same command line as ``python -m pfdist``."""

from pfdist.cli import main

main()
