"""A loop that waits on an event stops when cancelled, even as the event is set."""

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from common import waits
from engine.api import shutdown


async def _cancelled_as_woken(wait: Callable[[asyncio.Event], Awaitable[object]]) -> bool:
    """Whether a loop waiting with ``wait`` ends when cancelled just as its event is set
    (what a stopping server does to its trigger scheduler as a trigger finishes)."""
    woken = asyncio.Event()

    async def loop() -> None:
        while True:
            woken.clear()
            await wait(woken)

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    woken.set()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=0.5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return bool(done)


def test_a_cancellation_as_the_event_is_set_is_kept() -> None:
    assert asyncio.run(_cancelled_as_woken(lambda event: waits.until_set(event, 10.0)))


def test_the_wait_says_whether_the_event_was_set() -> None:
    async def main() -> tuple[bool, bool]:
        event = asyncio.Event()
        before = await waits.until_set(event, 0.01)
        event.set()
        return before, await waits.until_set(event, 10.0)

    assert asyncio.run(main()) == (False, True)


def test_a_stop_cancels_again_a_task_that_lost_its_cancellation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    swallowed = 0

    async def stubborn() -> None:  # as a loop around wait_for on Python 3.11 can be
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 1:
                    raise

    async def main() -> bool:
        task = asyncio.create_task(stubborn(), name="stubborn")
        await asyncio.sleep(0.01)
        task.cancel()
        await shutdown.ended([task], 5.0)
        return task.cancelled()

    assert asyncio.run(main()) and swallowed == 2
    assert "still running" not in caplog.text
