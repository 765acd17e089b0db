"""Redis paused, then killed and restarted, under a steady Decide load on an in-process
server: no call fails, every one answers.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks.chaos.harness import Tally, decide, load, world
from common.errors import ConfigurationError


@dataclass
class RedisFaults:
    tally: Tally
    recovered_after: float  # seconds from the restart to the first full answer


def redis_faults(data_dir: Path, seconds: float = 6.0) -> RedisFaults:
    """Paused at 0.5 s for 1 s, killed at 2 s, back at 2.5 s; the load runs ``seconds``
    (at least 4)."""
    seconds = max(seconds, 4.0)
    with world(data_dir, breaker_seconds=0.3) as (server, own):
        tally = Tally()
        first_full: list[float] = []
        restarted = [0.0]

        def call(n: int) -> None:
            before = tally.calls - tally.degraded
            decide(server, n, tally)
            if restarted[0] and not first_full and tally.calls - tally.degraded > before:
                first_full.append(time.monotonic() - restarted[0])

        def faults() -> None:
            client = redis.Redis.from_url(own.url)
            time.sleep(0.5)
            client.client_pause(1000)  # 0.5 s to 1.5 s: paused
            client.close()
            time.sleep(1.5)
            own.stop()  # 2 s: killed, back half a second later
            time.sleep(0.5)
            for _ in range(50):  # the port can stay busy for a moment after a kill
                try:
                    own.start()
                    break
                except ConfigurationError:
                    time.sleep(0.1)
            restarted[0] = time.monotonic()

        # The faults come from this thread: a redis-server dies with the thread that
        # started it (PR_SET_PDEATHSIG), so the restart must not happen in a short one.
        traffic = threading.Thread(target=load, args=(call, seconds))
        traffic.start()
        faults()
        traffic.join()
        return RedisFaults(tally, first_full[0] if first_full else float("inf"))
