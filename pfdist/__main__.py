"""``python -m pfdist``: the command line, e.g. ``torchrun --nproc_per_node=2 -m pfdist distance A B``."""

from pfdist.cli import main

main()
