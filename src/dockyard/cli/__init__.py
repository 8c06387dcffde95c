"""The ``dockyard`` command line (see docs/commands.md)."""

from dockyard.cli import inspect, node, run, volume  # noqa: F401 (registers the commands)
from dockyard.cli.app import cli, main

__all__ = ["cli", "main"]
