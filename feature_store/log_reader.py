"""Reading the decision and outcome logs (the global Redis streams) back, oldest first:
what training, evaluation and `arbiter models` read. Synchronous: batch jobs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from feature_store import keys, log_codec
from feature_store.redis_client import SyncClient, translated


def read_stream(
    client: SyncClient,
    key: str,
    decode: Callable[[Mapping[bytes, bytes]], Any],
    page: int = 5000,
) -> Iterator[Any]:
    """Every entry, decoded, oldest first, read in pages."""
    start = "-"
    while True:
        with translated(f"reading {key}"):
            entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(  # type: ignore[assignment]
                key, min=start, max="+", count=page
            )
        for _, fields in entries:
            yield decode(fields)
        if len(entries) < page:
            return
        start = f"({entries[-1][0].decode()}"


def read_decisions(client: SyncClient) -> list[Any]:
    """Every logged decision, oldest first (see docs/redis-keys.md for the entry)."""
    return list(read_stream(client, keys.DECISION_LOG, log_codec.decode_decision))


def read_outcomes(client: SyncClient) -> list[Any]:
    """Every logged outcome, oldest first."""
    return list(read_stream(client, keys.OUTCOME_LOG, log_codec.decode_outcome))


def read_logs(client: SyncClient) -> tuple[list[Any], list[Any]]:
    """Every logged decision and outcome, oldest first."""
    return read_decisions(client), read_outcomes(client)
