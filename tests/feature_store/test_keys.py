"""Pins the Redis key layout and value encoding byte for byte (docs/redis-keys.md)."""

from __future__ import annotations

import struct

import redis

from engine.settings import Definitions
from feature_store import keys, scripts
from feature_store.loader import load_profiles


def test_customer_keys_share_one_hash_tag() -> None:
    assert keys.customer_key("cust-000042", keys.PROFILE) == "arb:{cust-000042}:profile"
    assert keys.customer_key("cust-000042", keys.REALTIME) == "arb:{cust-000042}:rt"
    assert keys.customer_key("cust-000042", keys.EVENTS) == "arb:{cust-000042}:events"
    assert keys.customer_key("cust-000042", keys.DECISIONS) == "arb:{cust-000042}:decisions"
    assert keys.customer_key("cust-000042", keys.OUTCOMES) == "arb:{cust-000042}:outcomes"
    assert keys.idempotency_key("cust-000042", "k1") == "arb:{cust-000042}:idem:k1"
    assert keys.event_idempotency_key("cust-000042", "k1") == "arb:{cust-000042}:evidem:k1"
    assert keys.LOG_SHARDS == 16
    assert keys.log_shard("cust-000042") == 2  # crc32: the same in every process
    assert keys.decision_log(2) == "arb:log:decisions:{2}"
    assert keys.outcome_log(2) == "arb:log:outcomes:{2}"
    assert keys.decision_logs()[-1] == keys.LEGACY_DECISION_LOG == "arb:log:decisions"
    assert keys.outcome_logs()[-1] == keys.LEGACY_OUTCOME_LOG == "arb:log:outcomes"
    assert keys.LOAD_META == "arb:meta:load"
    assert keys.logged_ids(2) == "arb:log:decided:{2}"  # the shard's tag: one slot, one script
    assert keys.OFFER_HEALTH == "arb:models:offers"
    assert keys.TRAINER_LOCK == "arb:trainer:lock"
    # the online layer: one slot, so that one MULTI writes every key of it
    assert keys.LAYER == "arb:{adaptive}:layer"
    assert keys.LAYER_HISTORY == "arb:{adaptive}:history"
    assert keys.LAYER_EVIDENCE == "arb:{adaptive}:evidence"
    assert keys.LAYER_CARRY == "arb:{adaptive}:carry"
    assert keys.LEARNER_LOCK == "arb:{adaptive}:lock"
    assert keys.learner_weights(20_000) == "arb:{adaptive}:weights:20000"
    # event triggers: a customer's in one bucket, each bucket's keys under one tag
    assert keys.TRIGGER_BUCKETS == 16
    assert keys.trigger_bucket("cust-000042") == 2  # crc32, as the log shards
    assert keys.trigger_keys(2) == (
        "arb:{trig:2}:due",
        "arb:{trig:2}:pending",
        "arb:{trig:2}:fired",
    )
    assert keys.trigger_member("cust-000042", "basket_reminder") == "cust-000042|basket_reminder"
    assert keys.TRIGGER_PAUSED == "arb:{trig}:paused"
    assert keys.outbound_stream("email") == "arb:{out:email}:stream"
    assert keys.outbound_sent("email", "m1") == "arb:{out:email}:sent:m1"
    for kind, name in [
        (keys.WINDOWS, "win"),
        (keys.SESSION, "session"),
        (keys.CONTACTS, "contacts"),
        (keys.PENDING, "pending"),
        (keys.RESHOWN, "reshown"),
        (keys.POLICY, "policy"),
    ]:
        assert keys.customer_key("c", kind) == f"arb:{{c}}:{name}"


def test_fields_and_counters_inside_the_hashes() -> None:
    assert keys.cooldown_field("fibre") == "cool:fibre"
    assert keys.held_field("fibre") == "held:fibre"
    assert (keys.LIFETIME_COUNT, keys.EVENT_COUNT, keys.CHANNEL_COUNT) == ("n:", "e:", "c:")
    assert keys.CATEGORY_COUNT == "k:"
    assert (keys.OUTCOME_COUNT, keys.LAST_SEEN, keys.LAST_CATEGORY) == (
        "o:",
        "ts:last_seen",
        "last_category",
    )
    assert keys.SLIDING_WINDOWS == (("1h", 300, 12), ("24h", 3600, 24), ("7d", 86400, 7))
    # The Lua scripts spell none of these themselves: their prelude is generated.
    assert "local COOL = 'cool:'\n" in scripts.RESERVE
    assert "local RES = {{300, 12}, {3600, 24}, {86400, 7}}\n" in scripts.READ


def test_stored_profile_bytes(redis_client: redis.Redis, definitions: Definitions) -> None:
    schema = definitions.schema
    load_profiles(
        redis_client,
        schema,
        [("cust-000042", {"is_customer": 1, "tenure_months": 30.5}, {"first_name": "Noah"})],
    )

    stored = redis_client.hgetall("arb:{cust-000042}:profile")

    assert set(stored) == {b"v", b"s", b"a", b"u"}
    assert stored[b"a"] == b'{"first_name":"Noah"}'
    assert stored[b"s"] == schema.fingerprint.encode()
    vector = stored[b"v"]
    assert len(vector) == 4 * len(schema.batch)
    # Little-endian float32 in schema order: is_customer, tenure_months, plan_tier, ...
    assert vector[:8] == struct.pack("<ff", 1.0, 30.5)
    assert vector[8:12] == struct.pack("<f", 0.0)
    allowance = [f.name for f in schema.batch].index("data_allowance_gb")
    assert vector[4 * allowance : 4 * allowance + 4] == struct.pack("<f", 5.0)  # its default


def test_schema_fingerprint_pins_the_demo_schema(definitions: Definitions) -> None:
    # Changing the batch features changes this: stored profiles must then be reloaded.
    assert definitions.schema.fingerprint == "f9c2c8aa97b0"


def test_customer_id_rules() -> None:
    assert keys.customer_id_problem("cust-000042") is None
    assert keys.customer_id_problem("") == "is required"
    assert keys.customer_id_problem("a}b") is not None
    assert keys.customer_id_problem("a b") is not None
    assert keys.customer_id_problem("x" * 129) is not None
