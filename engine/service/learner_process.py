"""The learner (learner.py) as a process of its own, started and watched by `arbiter
serve` (one per server, or per supervisor of ``--workers``): a learner that dies is logged
and started again, after 1 s, doubled while it keeps dying within a minute, up to a minute.
Every replica may run one: a lock in Redis lets one learn at a time, and another takes
over within the lock's expiry when it stops. `arbiter learn` runs one in the foreground
(a Kubernetes Deployment of its own).

    python -m engine.service.learner_process   (its settings: ARBITER_* as the server's)
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from types import FrameType

from common import logs
from common.errors import ArbiterError
from common.reward import RewardWindows
from engine.service.learner import Learner
from engine.settings import ServerSettings, load_definitions
from feature_store.redis_client import connect_sync

log = logging.getLogger(__name__)
REDIS_URL_ENV = "ARBITER_REDIS_URL"
# The server's pid: the learner stops when it is no longer its parent (even when the
# server was gone before the learner had started)
PARENT_ENV = "ARBITER_LEARNER_PARENT"
RESTART_SECONDS = (1.0, 60.0)
STEADY_SECONDS = 60.0


def learner_for(settings: ServerSettings, redis_url: str) -> Learner:
    return Learner(
        connect_sync(redis_url),
        RewardWindows.of(settings.reward_window_minutes, settings.attribution_hours),
        customer_examples=settings.learner_customer_examples,
        customer_positives=settings.learner_customer_positives,
        categories=CatalogCategories(settings),
    )


class CatalogCategories:
    """Each offer's category in the catalog, read again when the file changes (an offer
    added while serving is learnt at once; a catalog that cannot be read keeps the last)."""

    def __init__(self, settings: ServerSettings) -> None:
        self._settings = settings
        self._stamp: float | None = None
        self._categories: dict[str, str] = {}

    def __call__(self) -> Mapping[str, str]:
        path = self._settings.catalog_path
        try:
            stamp = path.stat().st_mtime
            if stamp != self._stamp:
                definitions = load_definitions(self._settings)
                self._categories = {o.offer_id: o.category for o in definitions.catalog.offers}
                self._stamp = stamp
        except (OSError, ArbiterError) as exc:
            log.warning("learner: catalog not read (%s); offers' categories as they were", exc)
            self._stamp = None
        return self._categories


def learn(settings: ServerSettings, redis_url: str, *, parent: int | None = None) -> None:
    """Learns until SIGTERM or SIGINT, or until its ``parent`` (the server that started
    it: a pid) is gone: a server killed outright (SIGKILL) cannot stop it, and a learner of
    its own session would otherwise learn on for ever beside the next server's."""
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    learner = learner_for(settings, redis_url)
    log.info("learner: ticking every %.1f s on %s", settings.learner_seconds, "Redis")
    try:
        learner.run(
            settings.learner_seconds,
            stop=lambda: stopping or (parent is not None and os.getppid() != parent),
        )
    finally:
        learner.release()
        log.info("learner: stopped after %d examples", learner.applied)


class LearnerChild:
    """The learner process of a server: ``check()`` (called every second or so) starts it,
    and starts it again when it died."""

    def __init__(self, redis_url: str) -> None:
        self._redis_url = redis_url
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._wait = RESTART_SECONDS[0]
        self._next = 0.0
        self.restarts = 0

    def check(self) -> None:
        now = time.monotonic()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return
        if proc is not None:
            ran = now - self._started
            self._wait = (
                RESTART_SECONDS[0]
                if ran > STEADY_SECONDS
                else min(self._wait * 2, RESTART_SECONDS[1])
            )
            log.error(
                "the learner exited (code %s) after %.0f s; starting it again in %.0f s",
                proc.returncode,
                ran,
                self._wait,
            )
            self._proc, self._next = None, now + self._wait
            self.restarts += 1
        if now < self._next:
            return
        self._proc = subprocess.Popen(
            [sys.executable, "-m", __name__],
            env={**os.environ, REDIS_URL_ENV: self._redis_url, PARENT_ENV: str(os.getpid())},
            start_new_session=True,  # a Ctrl-C to the terminal is the server's to pass on
        )
        self._started = now

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("the learner did not stop in %.0f s; killing it", timeout)
            proc.kill()
            proc.wait()


def main() -> None:
    logs.configure()
    settings = ServerSettings()
    if settings.redis_url is None:
        raise SystemExit("the learner needs ARBITER_REDIS_URL")
    parent = os.environ.get(PARENT_ENV, "")
    learn(settings, settings.redis_url, parent=int(parent) if parent.isdigit() else None)


if __name__ == "__main__":
    main()
