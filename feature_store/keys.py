"""The Redis key layout: every key, field and counter prefix Arbiter writes is named
here and nowhere else (the Lua scripts get theirs from here too).

All keys of one customer carry the hash tag ``{customer_id}`` so that, on Redis Cluster,
they live in one slot and one pipeline (or one MULTI) reaches one node. Customer ids are
validated to contain no braces, so the tag is always exactly the id. docs/redis-keys.md
describes each key and value; tests/feature_store/test_keys.py pins them byte for byte.
"""

from __future__ import annotations

import re
import zlib

from engine.core import customer

PREFIX = "arb"

# Hash: v = packed little-endian float32 batch features in schema order, s = schema
# fingerprint, a = attributes as JSON, u = unix seconds of the last load.
PROFILE = "profile"
# Hash of real-time counters and timestamps (see the counter prefixes below).
REALTIME = "rt"
# Hash of windowed counters in ring slots (see SLIDING_WINDOWS and feature_store/scripts.py).
WINDOWS = "win"
# Hash of the current session's counters; expires after the session gap.
SESSION = "session"
# Sorted sets of contacts "<decision_id>|<offer_id>|<channel>": made (score: when) and
# reserved at decision time, awaiting their impression (score: when the reservation
# lapses). At most one pending member per offer: a later decision showing the offer again
# reuses it (a refreshed page takes no new place under the caps).
CONTACTS = "contacts"
PENDING = "pending"
# Hash "<decision_id>|<offer_id>" = the decision id of the pending contact that decision
# showed again, so its impression is counted as that one contact. Reset past RESHOWN_KEPT
# fields (a late report of an older showing then counts as a contact of its own).
RESHOWN = "reshown"
RESHOWN_KEPT = 512
# Hash of contact-policy state: cool:<offer_id> = until (unix s), held:<offer_id> = since.
POLICY = "policy"
# Hash of consent given or withdrawn through RecordEvent: <channel> = "<1|0>|<unix s>|<via>".
CONSENT = "consent"
CONSENT_EVENTS = customer.CONSENT_EVENTS
CONSENT_CHANNELS = customer.CONSENT_CHANNELS
# Capped lists of JSON records, newest first.
EVENTS = "events"
DECISIONS = "decisions"
OUTCOMES = "outcomes"
# String per reported outcome key, set once (idempotency of ReportOutcome), and per
# RecordEvent sent with an idempotency key (its own kind: an event's key and an outcome's
# may be the same text).
IDEMPOTENCY = "idem"
EVENT_IDEMPOTENCY = "evidem"
EVENT_IDEMPOTENCY_TTL_SECONDS = 86400
# String "<unix second>:<events in it>": the customer's event rate (RecordEvent).
EVENT_RATE = "evrate"

# The decision and outcome logs: LOG_SHARDS streams each, a customer's entries in shard
# log_shard(customer_id) of both, so that no one key (no one cluster node) takes every
# write. Readers merge the shards by entry id (time order). Each entry has one field.
LOG_SHARDS = 16
DECISION_FIELD = b"d"  # plain JSON (entries written before compression)
DECISION_FIELD_COMPRESSED = b"z"  # zlib-compressed JSON (feature_store/log_codec.py)
OUTCOME_FIELD = b"o"
# The single streams of earlier versions: read, trimmed and forgotten, never written.
LEGACY_DECISION_LOG = f"{PREFIX}:log:decisions"
LEGACY_OUTCOME_LOG = f"{PREFIX}:log:outcomes"
# Hash describing what bulk loads wrote (data set fingerprint, row count, time).
LOAD_META = f"{PREFIX}:meta:load"
# Each offer's model, watched (training/monitor.py): the latest report, JSON; written by
# every training run from the logs, read by `arbiter models` and /metrics.
OFFER_HEALTH = f"{PREFIX}:models:offers"
# Held by a training run from the logs (a token, with an expiry): one trainer at a time.
TRAINER_LOCK = f"{PREFIX}:trainer:lock"
# The online layer (engine/core/adaptive.py; written by the learner,
# engine/service/learner.py), all in one cluster slot so that one MULTI writes them:
# a hash (version = the publication's number, doc = JSON: the posteriors per model and
# offer, and the learner's positions in the logs; rollback = a rollback asked for), the
# earlier publications kept for `arbiter models rollback` (a list of layers' JSON, newest
# first), the models' evidence per
# offer (hash: model version -> JSON {offer: [rows, positives]}), each customer's weight
# in a day's learning (hash per day: <customer>|e examples, <customer>|p positives), and
# the learner's lock (a token, with an expiry).
ADAPTIVE = f"{PREFIX}:{{adaptive}}"
LAYER = f"{ADAPTIVE}:layer"
LAYER_VERSION = b"version"
LAYER_DOC = b"doc"
LAYER_ROLLBACK = b"rollback"  # asked by `arbiter models rollback`: "last", or a version
LAYER_HISTORY = f"{ADAPTIVE}:history"
LAYER_HISTORY_KEPT = 48
LAYER_EVIDENCE = f"{ADAPTIVE}:evidence"
# Hash: model version -> JSON {"from": the champion it replaced, "offers": {offer: how far
# the new model's log-odds moved from the champion's on recent decisions}}, written by a
# retrain that promotes: the learner carries the layer's corrections over with it.
LAYER_CARRY = f"{ADAPTIVE}:carry"
LEARNER_LOCK = f"{ADAPTIVE}:lock"


# Volume limits over the whole customer base (engine/core/contact_rules.Volume): a string
# per counter, "<offer:ID|channel:NAME>|<period seconds>|<period number>" = contacts made
# in that period, kept a period and an hour. One hash tag: one slot, so one script takes
# every counter of a decision atomically, on a cluster too.
VOLUME = f"{PREFIX}:{{volume}}"


def volume_key(counter: str) -> str:
    return f"{VOLUME}:{counter}"


# Event triggers (engine/core/triggers.py, feature_store/triggers.py) in TRIGGER_BUCKETS
# buckets, a customer's all in bucket trigger_bucket(customer_id), under one hash tag
# ``{trig:<bucket>}``: "due", a sorted set of "<customer_id>|<trigger_id>" by when the
# trigger is due (or when a scheduler's claim on it lapses); "pending", a hash of the same
# members -> the pending trigger (JSON: engine/core/triggers.Pending); "fired", a sorted
# set of the same members by when each last fired (re-eligibility), pruned past
# TRIGGER_FIRED_KEPT_SECONDS.
TRIGGER_BUCKETS = 16
TRIGGER_FIRED_KEPT_SECONDS = 90 * 86400


# Hash of what an operator paused (`arbiter outbound pause`): "trigger:<id>" or
# "channel:<name>" -> "<unix s>". Every scheduler reads it before it fires.
TRIGGER_PAUSED = f"{PREFIX}:{{trig}}:paused"


def trigger_bucket(customer_id: str) -> int:
    return zlib.crc32(customer_id.encode()) % TRIGGER_BUCKETS


def trigger_keys(bucket: int) -> tuple[str, str, str]:
    """``arb:{trig:<bucket>}:due``, ``...:pending``, ``...:fired``."""
    tag = f"{PREFIX}:{{trig:{bucket}}}"
    return f"{tag}:due", f"{tag}:pending", f"{tag}:fired"


def trigger_member(customer_id: str, trigger_id: str) -> str:
    return f"{customer_id}|{trigger_id}"


# The delivery streams (docs/outbound.md): one per outbound channel, its messages'
# sent markers (a string per message id, kept OUTBOUND_SENT_TTL_SECONDS: a message is
# added once) under the same hash tag.
OUTBOUND_SENT_TTL_SECONDS = 7 * 86400


def outbound_stream(channel: str) -> str:
    """``arb:{out:<channel>}:stream``: what senders on ``channel`` read."""
    return f"{PREFIX}:{{out:{channel}}}:stream"


def outbound_sent(channel: str, message_id: str) -> str:
    return f"{PREFIX}:{{out:{channel}}}:sent:{message_id}"


# Always-on outbound (engine/service/outbound_runs.py), each run under its own hash tag:
# "lease", a string naming the process going over the customer base for it (expiring);
# "<cycle>", a hash of that day's pass (cycle: the UTC date it started) and what its
# messages came to: where it is ("cursor", JSON), its counts, "started" and "finished"
# (unix s), "sent", "suppressed:<reason>". Kept RUN_KEPT_SECONDS.
RUN_KEPT_SECONDS = 30 * 86400


def run_keys(run_id: str, cycle: str) -> tuple[str, str]:
    """``arb:{run:<id>}:lease`` and ``arb:{run:<id>}:<cycle>``."""
    tag = f"{PREFIX}:{{run:{run_id}}}"
    return f"{tag}:lease", f"{tag}:{cycle}"


# What SCAN matches to go over the customer base: every loaded profile
PROFILES = f"{PREFIX}:{{*}}:{PROFILE}"


def profile_customer(key: str) -> str:
    """The customer id of a profile's key (``arb:{<customer_id>}:profile``)."""
    return key[len(PREFIX) + 2 : -len(PROFILE) - 2]


def learner_weights(day: int) -> str:
    """``arb:{adaptive}:weights:<day>``: customers' weights in day ``day`` (unix days)."""
    return f"{ADAPTIVE}:weights:{day}"


# Profile hash fields.
FIELD_VECTOR = b"v"
FIELD_SCHEMA = b"s"
FIELD_ATTRIBUTES = b"a"
FIELD_UPDATED = b"u"

# Counter and stamp names inside the real-time, window and session hashes: the feature
# schema's (engine/core/customer.py), stored as they are.
LIFETIME_COUNT = customer.LIFETIME_COUNT  # rt: n:<event_type>, events ever
EVENT_COUNT = customer.EVENT_COUNT  # win, session: e:<event_type>, e:<event_type>:<category>
CHANNEL_COUNT = customer.CHANNEL_COUNT  # rt, win: c:<channel>
CATEGORY_COUNT = customer.CATEGORY_COUNT  # win, session: k:<category>
OUTCOME_COUNT = customer.OUTCOME_COUNT  # rt, win: o:<outcome>
STAMP = customer.STAMP  # rt: ts:last_seen, ts:<event_type>, unix seconds
LAST_SEEN = customer.LAST_SEEN
# What an event type or category outside the schema's vocabulary is counted as.
OTHER = customer.OTHER
LAST_CATEGORY = "last_category"  # rt: the category of the latest event that had one
SESSION_STARTED = "started"  # session: unix seconds of its first event

# Contact-policy hash fields.
COOLDOWN = "cool:"  # cool:<offer_id> = end of the cool-down, unix seconds
HELD = "held:"  # held:<offer_id> = when accepted or converted

# Sliding windows over the windowed counters: (scope name, bucket seconds, slots). A
# window is its slots of buckets: 12 x 5 minutes, 24 x 1 hour, 7 x 1 day, in the order of
# CustomerRecord.windows counts (customer.WINDOW_SCOPES).
SLIDING_WINDOWS = (("1h", 300, 12), ("24h", 3600, 24), ("7d", 86400, 7))
WINDOW_SCOPES = customer.WINDOW_SCOPES
assert tuple(name for name, _, _ in SLIDING_WINDOWS) == WINDOW_SCOPES


# Every kind of per-customer state, as ForgetCustomer removes it (the idempotency keys,
# one per reported outcome, are found by pattern).
FORGETTABLE = (
    PROFILE,
    REALTIME,
    WINDOWS,
    SESSION,
    CONTACTS,
    PENDING,
    RESHOWN,
    POLICY,
    CONSENT,
    EVENTS,
    DECISIONS,
    OUTCOMES,
    EVENT_RATE,
)


def customer_key(customer_id: str, kind: str) -> str:
    """``arb:{<customer_id>}:<kind>``, the key of one of a customer's structures."""
    return f"{PREFIX}:{{{customer_id}}}:{kind}"


def idempotency_key(customer_id: str, key: str) -> str:
    return f"{PREFIX}:{{{customer_id}}}:{IDEMPOTENCY}:{key}"


def event_idempotency_key(customer_id: str, key: str) -> str:
    return f"{PREFIX}:{{{customer_id}}}:{EVENT_IDEMPOTENCY}:{key}"


def log_shard(customer_id: str) -> int:
    """The log shard of a customer's decisions and outcomes (stable: crc32)."""
    return zlib.crc32(customer_id.encode()) % LOG_SHARDS


def decision_log(shard: int) -> str:
    """``arb:log:decisions:{<shard>}``: the hash tag spreads the shards over the slots."""
    return f"{PREFIX}:log:decisions:{{{shard}}}"


def logged_ids(shard: int) -> str:
    """``arb:log:decided:{<shard>}``: the decision ids a shard took in the last minutes
    (sorted set, scored by when), so that a batch written again is written once."""
    return f"{PREFIX}:log:decided:{{{shard}}}"


def outcome_log(shard: int) -> str:
    return f"{PREFIX}:log:outcomes:{{{shard}}}"


def decision_logs() -> list[str]:
    """Every stream decisions are in: the shards, then the legacy stream."""
    return [decision_log(s) for s in range(LOG_SHARDS)] + [LEGACY_DECISION_LOG]


def outcome_logs() -> list[str]:
    return [outcome_log(s) for s in range(LOG_SHARDS)] + [LEGACY_OUTCOME_LOG]


def glob_escape(text: str) -> str:
    """``text`` matched literally in a Redis SCAN pattern."""
    return "".join("\\" + c if c in "\\*?[]" else c for c in text)


def cooldown_field(offer_id: str) -> str:
    return f"{COOLDOWN}{offer_id}"


def held_field(offer_id: str) -> str:
    return f"{HELD}{offer_id}"


# Printable, no whitespace, no braces (they would break the hash tag), 1..128 characters.
CUSTOMER_ID_MAX = 128


def customer_id_problem(customer_id: str) -> str | None:
    """Why ``customer_id`` cannot be a key component, or None when it can."""
    if not customer_id:
        return "is required"
    if len(customer_id) > CUSTOMER_ID_MAX:
        return f"is {len(customer_id)} characters, at most {CUSTOMER_ID_MAX} allowed"
    # One pass in C each (every call and every loaded line checks an id).
    if not customer_id.isprintable() or _SPACE_OR_BRACE.search(customer_id):
        return "must be printable, without whitespace or braces"
    return None


_SPACE_OR_BRACE = re.compile(r"[\s{}]")
