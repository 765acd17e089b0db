"""Requests that are not protobuf: bad bytes are bad arguments, not server errors.

gRPC decodes a request before any handler runs, and a decode failure would surface as
UNKNOWN with the exception in the message (or INTERNAL inside a stream). The interceptor
wraps each method's deserializer with ``tolerant``: undecodable bytes become an
``Undecodable`` value, which a unary handler answers with INVALID_ARGUMENT and
``DecideBatch`` answers in place, stream going on. Failures are counted, and logged as one
warning line at most every ``WARN_EVERY_SECONDS``, never with a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
WARN_EVERY_SECONDS = 10.0


class Undecodable:
    """Stands for a request whose bytes are not a ``message_type`` message."""

    __slots__ = ("message_type",)

    def __init__(self, message_type: str) -> None:
        self.message_type = message_type

    @property
    def problem(self) -> str:
        return f"cannot be decoded as {self.message_type}"


class DecodeFailures:
    """Counts undecodable requests; warns at most once per interval."""

    def __init__(self, warn_every: float = WARN_EVERY_SECONDS) -> None:
        self.count = 0
        self._warn_every = warn_every
        self._last_warning = -warn_every
        self._since_warning = 0

    def record(self, method: str) -> None:
        self.count += 1
        self._since_warning += 1
        now = time.monotonic()
        if now - self._last_warning >= self._warn_every:
            log.warning(
                "%d undecodable request(s) in the last %.0f s, latest to %s",
                self._since_warning,
                min(now - self._last_warning, self._warn_every),
                method,
            )
            self._last_warning = now
            self._since_warning = 0


def tolerant(
    deserializer: Callable[[bytes], Any] | None,
    message_type: str,
    method: str,
    failures: DecodeFailures,
) -> Callable[[bytes], Any] | None:
    """``deserializer`` that returns ``Undecodable`` instead of raising."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, invalid UTF-8, anything protobuf refuses
            failures.record(method)
            return Undecodable(message_type)

    return deserialize
