"""Waiting on an asyncio event without losing a cancellation."""

from __future__ import annotations

import asyncio
import contextlib


async def until_set(event: asyncio.Event, seconds: float) -> bool:
    """Waits up to ``seconds`` for ``event``; whether it is set.

    Not ``asyncio.wait_for(event.wait(), seconds)``: on Python 3.11 that returns normally
    when the task is cancelled just as the event is set, and a loop around it then runs on
    after its cancellation (python/cpython#86296; it is how a stopped server's trigger
    scheduler outlived its event loop). ``asyncio.timeout`` keeps the cancellation."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()
