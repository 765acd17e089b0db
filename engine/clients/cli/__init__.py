"""The `arbiter` command: engine's commands, in modules by job.

    command.py  the command table, argument parsing, dispatch and error printing
    calls.py    clients of the gRPC API: decide, profile, event, outcome, campaign, desk
    serve.py    serve: the embedded Redis when none is configured, then the server
    admin.py    operator commands on Redis and the model registry: load, models
    status.py   status: the service's health and what its /metrics say

training/cli.py adds the training commands (train, simulate, demo-data) and the demo
bootstrap of `serve --demo`, and is the `arbiter` entry point: training is the layer
above engine, and engine imports nothing from it.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.clients.cli import admin, calls, serve, status
from engine.clients.cli.command import Command, main

__all__ = ["Command", "commands", "main"]


def commands(
    prepare: Callable[[str], None] | None = None, offers: admin.OffersView | None = None
) -> list[Command]:
    """Engine's commands; ``prepare(redis_url)`` runs before `serve --demo` serves;
    ``offers`` shows each offer's model under `arbiter models`."""
    others = [c for c in admin.COMMANDS if c.name != "models"]
    return [
        serve.command(prepare),
        status.COMMAND,
        *calls.COMMANDS,
        admin.models_command(offers),
        *others,
    ]
