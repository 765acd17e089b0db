"""The Redis key layout: every key Arbiter writes is built here and nowhere else.

All keys of one customer carry the hash tag ``{customer_id}`` so that, on Redis Cluster,
they live in one slot and one pipeline (or one MULTI) reaches one node. Customer ids are
validated to contain no braces, so the tag is always exactly the id. docs/redis-keys.md
describes each key and value; tests/feature_store/test_keys.py pins them byte for byte.
"""

from __future__ import annotations

PREFIX = "arb"

# Hash: v = packed little-endian float32 batch features in schema order, s = schema
# fingerprint, a = attributes as JSON, u = unix seconds of the last load.
PROFILE = "profile"
# Hash of real-time counters and timestamps (see feature_store.schema).
REALTIME = "rt"
# Hash of windowed counters in ring slots (see feature_store/scripts.py).
WINDOWS = "win"
# Hash of the current session's counters; expires after the session gap.
SESSION = "session"
# Sorted sets of contacts "<decision_id>|<offer_id>|<channel>": made (score: when) and
# reserved at decision time, awaiting their impression (score: when the reservation lapses).
CONTACTS = "contacts"
PENDING = "pending"
# Hash of contact-policy state: cool:<offer_id> = until (unix s), held:<offer_id> = since.
POLICY = "policy"
# Capped lists of JSON records, newest first.
EVENTS = "events"
DECISIONS = "decisions"
OUTCOMES = "outcomes"
# String per reported outcome key, set once (idempotency of ReportOutcome).
IDEMPOTENCY = "idem"

# Global streams, not per customer: the training job reads them in time order.
DECISION_LOG = f"{PREFIX}:log:decisions"
OUTCOME_LOG = f"{PREFIX}:log:outcomes"
# Hash describing what bulk loads wrote (data set fingerprint, row count, time).
LOAD_META = f"{PREFIX}:meta:load"

# Profile hash fields.
FIELD_VECTOR = b"v"
FIELD_SCHEMA = b"s"
FIELD_ATTRIBUTES = b"a"
FIELD_UPDATED = b"u"


def customer_key(customer_id: str, kind: str) -> str:
    """``arb:{<customer_id>}:<kind>``, the key of one of a customer's structures."""
    return f"{PREFIX}:{{{customer_id}}}:{kind}"


def idempotency_key(customer_id: str, key: str) -> str:
    return f"{PREFIX}:{{{customer_id}}}:{IDEMPOTENCY}:{key}"


# Printable, no whitespace, no braces (they would break the hash tag), 1..128 characters.
CUSTOMER_ID_MAX = 128


def customer_id_problem(customer_id: str) -> str | None:
    """Why ``customer_id`` cannot be a key component, or None when it can."""
    if not customer_id:
        return "is required"
    if len(customer_id) > CUSTOMER_ID_MAX:
        return f"is {len(customer_id)} characters, at most {CUSTOMER_ID_MAX} allowed"
    if any(c in "{}" or not c.isprintable() or c.isspace() for c in customer_id):
        return "must be printable, without whitespace or braces"
    return None
