"""A server's stop: every step bounded and named, and a watchdog that ends a stop that
does not end."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import io
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

# Beyond twice the grace period, how long a stop may take before the watchdog ends it
STOP_SECONDS = 30.0


async def in_steps(steps: Sequence[tuple[str, Callable[[], Awaitable[Any]], float]]) -> None:
    """Each (name, step, seconds) in turn, within its seconds: one that hangs (a store on a
    dead socket, gRPC's own stop: grpc/grpc#28999) is logged by name and the stop goes on."""
    for name, step, seconds in steps:
        try:
            await asyncio.wait_for(step(), seconds)
        except TimeoutError:
            log.error("shutdown: %s did not finish within %.1f s; going on", name, seconds)


async def ended(tasks: Sequence[asyncio.Task[Any]], seconds: float) -> None:
    """Waits up to ``seconds`` for cancelled ``tasks`` to end, naming those that did not
    (a task that is slow to end after its cancellation, seen once on a busy machine)."""
    loop = asyncio.get_running_loop()
    until, pending = loop.time() + seconds, set(tasks)
    while pending and (left := until - loop.time()) > 0:
        _, pending = await asyncio.wait(pending, timeout=min(left, 1.0))
        for task in pending:  # one that lost its cancellation (common/waits.py) gets another
            task.cancel()
    if pending:
        names = ", ".join(sorted(t.get_name() for t in pending))
        log.error("shutdown: %s still running %.1f s after cancellation; going on", names, seconds)


def watchdog(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    """A stop that has not ended the process within ``seconds`` (every step is bounded;
    what is left is a task that ignores cancellation, or a thread the interpreter waits
    for) logs where each task and thread is, then exits: a SIGTERM must end the server."""

    def stuck() -> None:
        log.error("shutdown: still running after %.0f s; where it is:", seconds)
        with contextlib.suppress(Exception):  # the loop's tasks, read from another thread
            for task in list(asyncio.all_tasks(loop)):
                where = io.StringIO()
                task.print_stack(file=where)
                log.error("%s", where.getvalue())
        faulthandler.dump_traceback(all_threads=True)
        os._exit(1)

    timer = threading.Timer(seconds, stuck)
    timer.daemon = True
    timer.start()
