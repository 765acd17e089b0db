"""Where a decision's time goes, stage by stage (benchmarks and diagnostics).

``decide`` always laps a timer; the default ``NO_TIMER`` does nothing, so the hot path
carries no ``if timer:`` branches.
"""

from __future__ import annotations

import time


class StageTimer:
    """Accumulates microseconds per decision stage."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._last = time.perf_counter()

    def start(self) -> None:
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.totals[stage] = self.totals.get(stage, 0.0) + (now - self._last) * 1e6
        self._last = now


class _NoTimer(StageTimer):
    def start(self) -> None:
        pass

    def lap(self, stage: str) -> None:
        pass


NO_TIMER: StageTimer = _NoTimer()
