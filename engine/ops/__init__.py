"""Operator commands: the ones that run the service or work on its stores and model
registry directly, not through the API.

    serve.py    serve: the embedded Redis when none is configured, then the server
    admin.py    load, models (list, promote, rollback, challenger), learn, keys
    outbound.py outbound: the delivery streams (tail, status)

A layer above the API clients (engine/clients, gRPC only: they may not import the
service, the adapters or the stores; tests/test_layers.py holds them to it). The
`arbiter` command (training/cli.py) puts these beside the clients' and training's.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.clients.cli.command import Command
from engine.ops import admin, outbound, serve


def commands(
    prepare: Callable[[str], None] | None = None, offers: admin.OffersView | None = None
) -> tuple[Command, list[Command]]:
    """`serve` (``prepare(redis_url)`` runs before `serve --demo` serves), and the admin
    commands (``offers`` shows each offer's model under `arbiter models`)."""
    others = [c for c in admin.COMMANDS if c.name != "models"]
    return serve.command(prepare), [admin.models_command(offers), *others, outbound.COMMAND]
