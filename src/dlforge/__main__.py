"""`python -m dlforge …` (what torchrun launches on every worker)."""

from dlforge.cli import main

main()
