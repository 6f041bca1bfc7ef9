"""Subcommands of the ``degrade`` command line (one module each)."""
