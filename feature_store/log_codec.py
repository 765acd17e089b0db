"""How a decision-log entry is stored in its stream: JSON (orjson), zlib-compressed, in
the field ``z``. Entries written before compression (plain JSON in ``d``) still read.
Compressing costs the background log writer ~20 us an entry and takes it from ~2.5 KB to
well under 1 KB with the demo catalog (docs/redis-keys.md)."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import orjson

from feature_store import keys


def encode_decision(entry: Mapping[str, Any] | bytes) -> dict[bytes, bytes]:
    """``entry``: the entry, or its JSON."""
    data = entry if isinstance(entry, bytes) else orjson.dumps(entry)
    return {keys.DECISION_FIELD_COMPRESSED: zlib.compress(data, 1)}


def decode_decision(fields: Mapping[bytes, bytes]) -> Any:
    packed = fields.get(keys.DECISION_FIELD_COMPRESSED)
    if packed is not None:
        return orjson.loads(zlib.decompress(packed))
    return orjson.loads(fields[keys.DECISION_FIELD])


def decode_outcome(fields: Mapping[bytes, bytes]) -> Any:
    return orjson.loads(fields[keys.OUTCOME_FIELD])
