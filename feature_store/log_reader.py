"""Reading the decision and outcome logs back, oldest first: what training, evaluation,
the export job and `arbiter models` read. Each log is ``keys.LOG_SHARDS`` streams (and
the legacy single stream); readers merge them by entry id, which is time order.
Synchronous: batch jobs."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from feature_store import keys, log_codec
from feature_store.redis_client import SyncClient, translated


def entry_order(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id ``<ms>-<seq>`` as a sortable pair."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def log_order(entry_id: bytes | str, entry: Any) -> tuple[int, float, int]:
    """Where an entry sorts among every shard's: by entry id, and within one millisecond
    (entries of one batch share it across shards) by when it was decided or reported."""
    ms, seq = entry_order(entry_id)
    ts = entry.get("ts", 0.0) if isinstance(entry, dict) else 0.0
    return ms, ts, seq


def read_entries(
    client: SyncClient,
    key: str,
    decode: Callable[[Mapping[bytes, bytes]], Any],
    *,
    page: int = 5000,
    after: str = "",
) -> Iterator[tuple[bytes, Any]]:
    """(entry id, decoded entry) of one stream, oldest first, read in pages; ``after``:
    only the entries after that id."""
    start = f"({after}" if after else "-"
    while True:
        with translated(f"reading {key}"):
            entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(  # type: ignore[assignment]
                key, min=start, max="+", count=page
            )
        for entry_id, fields in entries:
            yield entry_id, decode(fields)
        if len(entries) < page:
            return
        start = f"({entries[-1][0].decode()}"


def read_merged(
    client: SyncClient, streams: Sequence[str], decode: Callable[[Mapping[bytes, bytes]], Any]
) -> Iterator[Any]:
    """Every entry of ``streams``, decoded, in ``log_order``, a page of each in memory."""
    merged = heapq.merge(
        *(read_entries(client, key, decode) for key in streams),
        key=lambda entry: log_order(*entry),
    )
    for _, entry in merged:
        yield entry


def read_decisions(client: SyncClient) -> list[Any]:
    """Every logged decision, oldest first (see docs/redis-keys.md for the entry)."""
    return list(read_merged(client, keys.decision_logs(), log_codec.decode_decision))


def read_outcomes(client: SyncClient) -> list[Any]:
    """Every logged outcome, oldest first."""
    return list(read_merged(client, keys.outcome_logs(), log_codec.decode_outcome))


def read_logs(client: SyncClient) -> tuple[list[Any], list[Any]]:
    """Every logged decision and outcome, oldest first."""
    return read_decisions(client), read_outcomes(client)
