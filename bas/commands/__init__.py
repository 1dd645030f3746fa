"""Subcommands of the `bas` console command, one module each (see bas/cli.py)."""
