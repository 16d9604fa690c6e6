"""`python -m socialads` runs the CLI."""

from socialads.cli import main

main()
