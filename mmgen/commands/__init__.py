"""Subcommands of `mmgen`: each module defines `register(subparsers)` and sets `func`."""
