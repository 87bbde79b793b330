"""`python -m qatie` (also how torchrun starts data-parallel training: `torchrun -m qatie train`)."""

from qatie.cli import main

main()
