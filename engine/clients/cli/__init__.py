"""The `arbiter` command's API clients, in modules by job; gRPC only (the operator
commands that need Redis or the model registry are in engine/ops).

    command.py  the command table, argument parsing, dispatch and error printing
    calls.py    clients of the gRPC API: decide, profile, event, outcome, campaign, desk
    status.py   status: the service's health and what its /metrics say

training/cli.py is the `arbiter` entry point: it puts these beside engine/ops' commands
and the training ones (train, simulate, demo-data, ...): training is the layer above
engine, and engine imports nothing from it.
"""

from __future__ import annotations

from engine.clients.cli import calls, status
from engine.clients.cli.command import Command, main

__all__ = ["Command", "commands", "main"]


def commands() -> list[Command]:
    """The commands that call the service over gRPC."""
    return [status.COMMAND, *calls.COMMANDS]
