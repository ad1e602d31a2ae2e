"""`python -m modelseal.cli`: the command line."""

from modelseal.cli import main

main()
