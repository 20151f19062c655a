"""``python -m swarmwatch`` runs the CLI."""
from swarmwatch.cli import main

main()
