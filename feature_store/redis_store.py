"""The Redis (or Valkey, or Redis Cluster) implementation of the online store.
(Over 300 lines: one class for the nine calls of both protocols, as memory_store.py.)

Uses only Redis 6.2 commands: hashes, sorted sets, lists, streams and Lua scripts (see
feature_store/scripts.py), each script on one customer's keys. See
docs/redis-keys.md for the layout and feature_store/keys.py for the names.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from common.errors import (
    ArbiterError,
    ProfileSchemaMismatch,
    RateLimited,
    Unavailable,
)
from engine.core import contact_reservation
from engine.core.customer import Contact, CustomerRecord, OutcomeEffects, Reservation
from engine.core.schema import FeatureSchema
from feature_store import keys, log_codec, redis_client, scripts
from feature_store.hot_redis import Hot, HotCluster
from feature_store.log_append import (
    HISTORY_TTL_SECONDS,
    LOG_MAX_ENTRIES,
    LOG_RETENTION_SECONDS,
    LogAppender,
)
from feature_store.log_reader import log_order
from feature_store.redis_client import AsyncClient, translated, unavailable
from feature_store.store import (
    EVENTS_PER_SECOND,
    OUTCOMES_KEPT,
    CustomerHistory,
    EventRecord,
    Forgotten,
    LoggedDecision,
    OutcomeRecord,
    consent_changes,
    decode_consent,
    encode_consent,
    stored_attributes,
)

IDEMPOTENCY_TTL_SECONDS = 30 * 86400
# A report holds its idempotency key this long while it appends to the outcome log.
OUTCOME_LEASE_SECONDS = 10
POLICY_TTL_SECONDS = 400 * 86400  # cool-downs and "already holds" outlive a year

READ_KEYS = (
    keys.PROFILE,
    keys.REALTIME,
    keys.WINDOWS,
    keys.SESSION,
    keys.CONTACTS,
    keys.PENDING,
    keys.POLICY,
    keys.CONSENT,
)
_OUTCOME_KEYS = (
    keys.OUTCOMES,
    keys.REALTIME,
    keys.WINDOWS,
    keys.CONTACTS,
    keys.PENDING,
    keys.POLICY,
    keys.RESHOWN,
)
# A script call's keys and arguments.
ScriptCall = tuple[list[str], list[Any]]


def _json(value: Any) -> bytes:
    # orjson: a 100-candidate decision-log entry encodes in ~7 us instead of ~120 us.
    return orjson.dumps(value)


def _pairs(flat: list[bytes]) -> dict[str, str]:
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


def _contacts(flat: list[bytes]) -> tuple[Contact, ...]:
    """Sorted-set members with their scores, as contacts."""
    out = []
    for i in range(0, len(flat), 2):
        decision_id, offer_id, channel = flat[i].decode().split("|", 2)
        out.append(Contact(decision_id, offer_id, channel, float(flat[i + 1])))
    return tuple(out)


def _policy(flat: list[Any]) -> tuple[dict[str, float], dict[str, float]]:
    """The policy hash's cool-downs and acceptances, offer id -> unix seconds."""
    cooldowns: dict[str, float] = {}
    held: dict[str, float] = {}
    for i in range(0, len(flat), 2):
        name = flat[i].decode()
        if name.startswith(keys.COOLDOWN):
            cooldowns[name[len(keys.COOLDOWN) :]] = float(flat[i + 1])
        elif name.startswith(keys.HELD):
            held[name[len(keys.HELD) :]] = float(flat[i + 1])
    return cooldowns, held


def decode_fetch(schema: FeatureSchema, customer_id: str, reply: list[Any]) -> CustomerRecord:
    """The record from the reply of the READ script."""
    profile, realtime, windows, session, contacts, pending, policy, consent = reply
    vector, fingerprint, attributes, loaded = profile
    rt = _pairs(realtime)
    last_category = rt.pop(keys.LAST_CATEGORY, "")
    cooldowns, held = _policy(policy)
    counts = {
        windows[i].decode(): tuple(float(c) for c in windows[i + 1 : i + 4])
        for i in range(0, len(windows), 4)
    }
    extra: dict[str, Any] = {
        "windows": counts,
        "session": _pairs(session),
        "contacts": _contacts(contacts),
        "pending": _contacts(pending),
        "cooldowns": cooldowns,
        "held": held,
        "consent": {
            channel: c for channel, text in _pairs(consent).items() if (c := decode_consent(text))
        },
        "last_category": last_category,
        "loaded_at": float(loaded) if loaded else 0.0,
    }
    if vector is None:
        return CustomerRecord(customer_id, False, schema.decode_batch(None), {}, rt, **extra)
    if fingerprint.decode() != schema.fingerprint:
        raise ProfileSchemaMismatch(
            f"profile of {customer_id} was written with schema {fingerprint.decode()}, "
            f"serving schema is {schema.fingerprint}: reload profiles"
        )
    attrs = stored_attributes(attributes)
    return CustomerRecord(customer_id, True, schema.decode_batch(vector), attrs, rt, **extra)


class RedisFeatureStore:
    """FeatureStore and DecisionLog over one Redis client."""

    def __init__(
        self,
        client: AsyncClient,
        schema: FeatureSchema,
        *,
        contact_horizon_seconds: int = 30 * 86400,
        session_seconds: int = 1800,
        events_per_second: int = EVENTS_PER_SECOND,
        log_max_entries: int = LOG_MAX_ENTRIES,
        log_retention_seconds: float = LOG_RETENTION_SECONDS,
        log_client: AsyncClient | None = None,
        hot: Hot | None = None,
    ) -> None:
        # The background log writer's own client: it may wait longer than a request may
        # (a backlog after an outage comes in full batches), and it must not take the
        # request path's connections. Default: the same client.
        self._log_redis = log_client or client
        self._log = LogAppender(
            self._log_redis,
            log_max_entries=log_max_entries,
            log_retention_seconds=log_retention_seconds,
        )
        self._events_per_second = events_per_second
        # Per shard: the logs together keep about log_max_entries.
        self._shard_max_entries = max(1, log_max_entries // keys.LOG_SHARDS)
        self._redis = client
        # The decision path's READ and RESERVE on multiplexed connections of their own
        # (one per server or primary): see feature_store/hot_redis.py. None: ``client``.
        self._hot = hot
        self._schema = schema
        self._horizon = contact_horizon_seconds
        self._session_seconds = session_seconds
        self._read = client.register_script(scripts.READ)
        self._event = client.register_script(scripts.EVENT)
        self._reserve = client.register_script(scripts.RESERVE)
        self._outcome = client.register_script(scripts.OUTCOME)
        self._finish_outcome = client.register_script(scripts.FINISH_OUTCOME)
        self._volume = client.register_script(scripts.VOLUME)
        self._volume_back = client.register_script(scripts.VOLUME_BACK)
        self._scripts = (
            self._read,
            self._event,
            self._reserve,
            self._outcome,
            self._finish_outcome,
            self._volume,
            self._volume_back,
        )
        self._ready_lock = asyncio.Lock()
        self._ready = False

    @property
    def cancel_safe(self) -> bool:
        """Whether a call on the decision path (fetch, reserve) may be cancelled by the
        caller's own ``asyncio.timeout``: on the hot connections, whose replies are
        matched in order and dropped when their caller has gone (redis-py runs its own
        ``asyncio.timeout`` inside, so its calls go under ``wait_for``)."""
        return self._hot is not None

    def shard_of(self, customer_id: str) -> str:
        """The cluster primary holding ``customer_id``'s keys (``host:port``), so that one
        primary's failure is not taken for the whole store's; "" on one server."""
        hot = self._hot
        if isinstance(hot, HotCluster):
            return hot.shard_of(keys.customer_key(customer_id, keys.REALTIME))
        return ""

    def shards(self) -> set[str]:
        """Every cluster primary's ``host:port`` as last learned (none on one server)."""
        hot = self._hot
        return hot.shards() if isinstance(hot, HotCluster) else set()

    @property
    def client(self) -> AsyncClient:
        return self._redis

    async def aclose(self) -> None:
        if self._hot is not None:
            await self._hot.aclose()
        await redis_client.aclose(self._redis)
        if self._log_redis is not self._redis:
            await redis_client.aclose(self._log_redis)

    async def prepare(self) -> None:
        """Before the first script runs: a cluster client learns the layout, and every
        primary gets the scripts. (redis-py's cluster client, used by many calls at once
        before it knows the layout, fails some of them and runs others twice: redis-py
        issue 3935. And its pipelines do not load scripts.) Once; again after a failure.
        The server calls it at start, so that its first decision does not pay for it."""
        if self._ready:
            return
        async with self._ready_lock:
            if self._ready:
                return
            if isinstance(self._redis, aioredis.RedisCluster):
                await self._redis.initialize()
            await self._load_scripts()
            self._ready = True

    async def _load_scripts(self) -> None:
        """Every script, on every primary (SCRIPT LOAD goes to all of a cluster's)."""
        for script in self._scripts:
            await self._redis.script_load(script.script)

    def _keys(self, customer_id: str, *kinds: str) -> list[str]:
        return [keys.customer_key(customer_id, kind) for kind in kinds]

    async def fetch(self, customer_id: str, now: float | None = None) -> CustomerRecord:
        now = time.time() if now is None else now
        # quiet: a failure here is the breaker's to report (engine/service/breaker.py)
        with translated("feature store read", quiet=True):
            await self.prepare()
            reply = await self._hot_call(
                self._read, self._keys(customer_id, *READ_KEYS), [now, now - self._horizon]
            )
        return decode_fetch(self._schema, customer_id, reply)

    async def _hot_call(self, script: Any, script_keys: list[str], args: list[Any]) -> Any:
        """``script`` on the hot connection when there is one, else through the client
        (which loads a script missing after a restart, as this does)."""
        if self._hot is None:
            return await script(keys=script_keys, args=args)
        try:
            return await self._hot.evalsha(script.sha, script_keys, args)
        except NoScriptError:  # a server restarted or failed over: the call did nothing
            await self._load_scripts()
            return await self._hot.evalsha(script.sha, script_keys, args)

    async def fetch_many(
        self, customer_ids: Sequence[str], now: float
    ) -> list[CustomerRecord | ArbiterError]:
        """Records of many customers in one pipelined round trip; a customer whose read
        failed gets the error in its place."""
        calls = [(self._keys(cid, *READ_KEYS), [now, now - self._horizon]) for cid in customer_ids]
        with translated("feature store read"):
            await self.prepare()
            replies = await self._scripted_pipeline(self._read, calls)
        out: list[CustomerRecord | ArbiterError] = []
        for cid, reply in zip(customer_ids, replies, strict=True):
            if isinstance(reply, Exception):
                out.append(unavailable("feature store read", reply))
                continue
            try:
                out.append(decode_fetch(self._schema, cid, reply))
            except ProfileSchemaMismatch as exc:
                out.append(exc)
        return out

    async def _scripted_pipeline(self, script: Any, calls: Sequence[ScriptCall]) -> list[Any]:
        """The replies of ``script`` run once per (keys, args) of ``calls`` in one
        non-transactional pipeline, errors in place. The calls that got NOSCRIPT (a server
        restarted, a replica promoted since the scripts were loaded; such a call did
        nothing) run once more after the scripts are loaded on every primary. (EVALSHA is
        queued by name: redis-py 8.1's cluster pipeline refuses its ``evalsha`` method, not
        the command, which it routes by the first key.)"""
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            pipe = self._redis.pipeline(transaction=False)
            for i in todo:
                script_keys, args = calls[i]
                pipe.execute_command("EVALSHA", script.sha, len(script_keys), *script_keys, *args)
            for i, reply in zip(todo, await pipe.execute(raise_on_error=False), strict=True):
                replies[i] = reply
            todo = [i for i in todo if isinstance(replies[i], NoScriptError)]
            if not todo or attempt:
                break
            await self._load_scripts()
        return replies

    async def record_event(self, event: EventRecord) -> bool:
        schema = self._schema
        with translated("feature store write"):
            await self.prepare()
            script_keys = self._keys(
                event.customer_id,
                keys.REALTIME,
                keys.EVENTS,
                keys.WINDOWS,
                keys.SESSION,
                keys.EVENT_RATE,
                keys.CONSENT,
            )
            if event.idempotency_key:
                script_keys.append(
                    keys.event_idempotency_key(event.customer_id, event.idempotency_key)
                )
            applied = await self._event(
                keys=script_keys,
                args=[
                    repr(event.occurred_at),
                    schema.counted_event_type(event.event_type),
                    event.channel,
                    schema.counted_category(event.attributes.get("category", "")),
                    _json(event.as_json()),
                    schema.realtime_ttl_seconds,
                    schema.recent_events,
                    self._session_seconds,
                    time.time(),
                    self._events_per_second,
                    int(schema.counts_type_category_pairs),
                    POLICY_TTL_SECONDS,
                    keys.EVENT_IDEMPOTENCY_TTL_SECONDS,
                    *(
                        part
                        for channel, consent in consent_changes(event).items()
                        for part in (channel, encode_consent(consent))
                    ),
                ],
            )
        if not applied:
            raise RateLimited(
                f"customer_id: over {self._events_per_second} events a second; retry later"
            )
        return bool(applied == 1)  # 2: its idempotency key was seen already

    def _reserve_call(self, reservation: Reservation) -> ScriptCall:
        def caps(pairs: tuple[tuple[int, int], ...]) -> str:
            return ",".join(f"{w}:{m}" for w, m in pairs)

        args: list[Any] = [
            time.time(),
            reservation.decision_id,
            reservation.channel,
            int(reservation.outbound),
            reservation.pending_until,
            self._horizon,
            caps(reservation.channel_caps),
            caps(reservation.budget),
            ",".join(reservation.budget_channels),
        ]
        for offer_id, offer_caps, suppress in reservation.offers:
            args += [offer_id, caps(offer_caps), int(suppress)]
        script_keys = self._keys(
            reservation.customer_id, keys.CONTACTS, keys.PENDING, keys.POLICY, keys.RESHOWN
        )
        return script_keys, args

    async def reserve(self, reservation: Reservation) -> list[str]:
        """The volume limits' claim first when the reservation has any (the VOLUME script,
        on the counters' own slot), the customer's re-check with what it let through, then
        the volume a refused contact took given back."""
        with translated("contact reservation", quiet=True):  # the breaker's to report
            await self.prepare()
            claimed = None
            if reservation.channel_volume or reservation.offer_volume:
                volume_keys, volume_args = _volume_call(reservation)
                claimed = _claimed(await self._volume(keys=volume_keys, args=volume_args))
                if claimed.channel_full:
                    return []
                reservation = contact_reservation.without(reservation, claimed.refused)
            script_keys, args = self._reserve_call(reservation)
            reserved = [r.decode() for r in await self._hot_call(self._reserve, script_keys, args)]
            if claimed is not None:
                back = contact_reservation.given_back(reservation, claimed, reserved)
                if back:
                    await self._volume_back(keys=[keys.volume_key(n) for n in back])
        return reserved

    async def reserve_many(
        self, reservations: Sequence[Reservation]
    ) -> list[list[str] | ArbiterError]:
        """``reserve`` for many decisions in one pipelined round trip (three when some
        have volume limits: the claims, the reservations, what is given back)."""
        with translated("contact reservation"):
            await self.prepare()
            limited = [i for i, r in enumerate(reservations) if r.channel_volume or r.offer_volume]
            claims: dict[int, contact_reservation.Claim | ArbiterError] = {}
            if limited:
                replies = await self._scripted_pipeline(
                    self._volume, [_volume_call(reservations[i]) for i in limited]
                )
                for i, reply in zip(limited, replies, strict=True):
                    claims[i] = (
                        unavailable("contact reservation", reply)
                        if isinstance(reply, Exception)
                        else _claimed(reply)
                    )
            asked = []
            for i, r in enumerate(reservations):
                c = claims.get(i)
                if isinstance(c, contact_reservation.Claim) and not c.channel_full:
                    asked.append((i, contact_reservation.without(r, c.refused)))
                elif c is None:
                    asked.append((i, r))
            results: list[list[str] | ArbiterError] = [
                c if isinstance(c, ArbiterError) else []
                for c in (claims.get(i) for i in range(len(reservations)))
            ]
            replies = await self._scripted_pipeline(
                self._reserve, [self._reserve_call(r) for _, r in asked]
            )
            back: list[ScriptCall] = []
            for (i, r), reply in zip(asked, replies, strict=True):
                if isinstance(reply, Exception):
                    results[i] = unavailable("contact reservation", reply)
                    continue  # what a claim took stays taken: the limit holds
                results[i] = [o.decode() for o in reply]
                c = claims.get(i)
                if isinstance(c, contact_reservation.Claim):
                    names = contact_reservation.given_back(r, c, results[i])  # type: ignore[arg-type]
                    if names:
                        back.append(([keys.volume_key(n) for n in names], []))
            if back:
                await self._scripted_pipeline(self._volume_back, back)
        return results

    async def volume_usage(self, counters: Sequence[str]) -> list[int]:
        if not counters:
            return []
        # quiet: the breaker says when the store is down; the watch keeps its last counters
        with translated("volume counters read", quiet=True):
            values = await self._redis.mget([keys.volume_key(n) for n in counters])
        return [int(v) if v is not None else 0 for v in values]

    async def history(self, customer_id: str) -> CustomerHistory:
        pipe = self._redis.pipeline(transaction=False)
        pipe.lrange(keys.customer_key(customer_id, keys.EVENTS), 0, -1)
        pipe.lrange(keys.customer_key(customer_id, keys.DECISIONS), 0, -1)
        pipe.lrange(keys.customer_key(customer_id, keys.OUTCOMES), 0, -1)
        with translated("feature store read"):
            events, decisions, outcomes = await pipe.execute()
        return CustomerHistory(
            events=[orjson.loads(e) for e in events],
            decisions=newest_once([orjson.loads(d) for d in decisions]),
            outcomes=[orjson.loads(o) for o in outcomes],
        )

    async def append_decisions(self, decisions: Sequence[LoggedDecision]) -> None:
        await self._log.append_decisions(decisions)

    async def record_outcome(
        self, outcome: OutcomeRecord, effects: OutcomeEffects
    ) -> tuple[bool, str]:
        cid = outcome.customer_id
        idem = keys.idempotency_key(cid, outcome.idempotency_key)
        with translated("outcome log write"):
            await self.prepare()
            state, value = await self._outcome(
                keys=[idem, *self._keys(cid, *_OUTCOME_KEYS)],
                args=[
                    IDEMPOTENCY_TTL_SECONDS,
                    _json(outcome.summary()),
                    OUTCOMES_KEPT,
                    HISTORY_TTL_SECONDS,
                    outcome.outcome,
                    self._schema.realtime_ttl_seconds,
                    repr(outcome.occurred_at),
                    outcome.decision_id,
                    outcome.offer_id,
                    effects.cooldown_until,
                    int(effects.suppress),
                    int(effects.impression),
                    self._horizon,
                    POLICY_TTL_SECONDS,
                    secrets.token_hex(8),
                    time.time(),
                    OUTCOME_LEASE_SECONDS,
                ],
            )
            if state == b"done":
                return False, value.decode()
            if state == b"busy":
                settled = await self._settled_id(idem)
                if not settled:
                    # The first report took its lease and has not logged the outcome: in
                    # flight still, or cut off (a server stopping under it). Refused as a
                    # duplicate, a cut-off one would be lost: the caller retries, and once
                    # the lease lapses its retry logs it.
                    raise Unavailable(
                        "idempotency_key: an earlier report of this outcome is still being"
                        " recorded; retry in a few seconds"
                    )
                return False, settled
            log_id = await self._redis.xadd(
                keys.outcome_log(keys.log_shard(cid)),
                {keys.OUTCOME_FIELD: _json(outcome.log_entry())},
                maxlen=self._shard_max_entries,
                approximate=True,
            )
            await self._finish_outcome(keys=[idem], args=[value, log_id])
        return True, log_id.decode() if isinstance(log_id, bytes) else str(log_id)

    async def _settled_id(self, idem: str, wait: float = 0.5) -> str:
        """The log id a concurrent first report stores under ``idem``, once it has (""
        if it takes longer than ``wait``)."""
        deadline = time.monotonic() + wait
        while True:
            current = await self._redis.get(idem)
            text = current.decode() if isinstance(current, bytes) else current
            if text is not None and not text.startswith("pending"):
                return str(text)
            if time.monotonic() >= deadline:
                return ""
            await asyncio.sleep(0.02)

    async def forget(self, customer_id: str) -> Forgotten:
        """Deletes the customer's keys (one slot: one node), its idempotency keys (found by
        SCAN) and its entries in both logs (a scan of the customer's shard of each, and of
        the legacy streams: an administrative call, not a hot path)."""
        names = [keys.customer_key(customer_id, kind) for kind in keys.FORGETTABLE]
        # Outcome and event idempotency keys alike: arb:{C}:idem:* and arb:{C}:evidem:*
        pattern = f"{keys.PREFIX}:{{{keys.glob_escape(customer_id)}}}:*{keys.IDEMPOTENCY}:*"
        with translated("forget"):
            pipe = self._redis.pipeline(transaction=False)
            for name in names:
                pipe.exists(name)
            present = await pipe.execute()
            idem = [key async for key in self._redis.scan_iter(match=pattern, count=1000)]
            if any(present) or idem:
                await self._redis.delete(*names, *idem)
            shard = keys.log_shard(customer_id)
            decisions = outcomes = 0
            for stream in (keys.decision_log(shard), keys.LEGACY_DECISION_LOG):
                decisions += await self._forget_in_stream(
                    stream, log_codec.decode_decision, customer_id
                )
            for stream in (keys.outcome_log(shard), keys.LEGACY_OUTCOME_LOG):
                outcomes += await self._forget_in_stream(
                    stream, log_codec.decode_outcome, customer_id
                )
        return Forgotten(
            removed=tuple(kind for kind, n in zip(keys.FORGETTABLE, present, strict=True) if n),
            idempotency_keys=len(idem),
            decision_log_entries=decisions,
            outcome_log_entries=outcomes,
        )

    async def _forget_in_stream(
        self, key: str, decode: Callable[[Mapping[bytes, bytes]], Any], customer_id: str
    ) -> int:
        removed, start = 0, "-"
        while True:
            page: list[tuple[bytes, dict[bytes, bytes]]] = await self._redis.xrange(  # type: ignore[assignment]
                key, min=start, max="+", count=5000
            )
            ids = [i for i, fields in page if decode(fields).get("customer_id") == customer_id]
            if ids:
                removed += await self._redis.xdel(key, *ids)
            if len(page) < 5000:
                return removed
            start = f"({page[-1][0].decode()}"

    async def read_decisions(self) -> list[Any]:
        return await self._read_streams(keys.decision_logs(), log_codec.decode_decision)

    async def read_outcomes(self) -> list[Any]:
        return await self._read_streams(keys.outcome_logs(), log_codec.decode_outcome)

    async def _read_streams(
        self,
        streams: Sequence[str],
        decode: Callable[[Mapping[bytes, bytes]], Any],
        page: int = 5000,
    ) -> list[Any]:
        """Every entry of ``streams``, decoded, in ``log_order`` (time order)."""
        out: list[tuple[tuple[int, float, int], Any]] = []
        for key in streams:
            start = "-"
            while True:
                with translated(f"reading {key}"):
                    entries: list[tuple[bytes, dict[bytes, bytes]]] = await self._redis.xrange(  # type: ignore[assignment]
                        key, min=start, max="+", count=page
                    )
                out += [(log_order(i, e), e) for i, e in ((i, decode(f)) for i, f in entries)]
                if len(entries) < page:
                    break
                start = f"({entries[-1][0].decode()}"
        out.sort(key=lambda pair: pair[0])
        return [entry for _, entry in out]


def newest_once(summaries: list[Any]) -> list[Any]:
    """A customer's decision summaries newest first, each decision once: a log batch
    written again pushes its summaries again, on top of newer ones."""
    seen: set[object] = set()
    out = []
    for s in summaries:
        key = s.get("decision_id") if isinstance(s, dict) else None
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        out.append(s)
    return sorted(out, key=lambda s: -float(s.get("ts", 0.0)) if isinstance(s, dict) else 0.0)


def _volume_call(r: Reservation) -> ScriptCall:
    """The VOLUME script's keys and arguments for ``r``'s counters."""
    script_keys = [keys.volume_key(name) for name, _, _ in r.channel_volume]
    args: list[Any] = [len(r.channel_volume)]
    for _, most, keep in r.channel_volume:
        args += [most, keep]
    for offer_id, counters in r.offer_volume:
        args += [offer_id, len(counters)]
        for name, most, keep in counters:
            script_keys.append(keys.volume_key(name))
            args += [most, keep]
    return script_keys, args


def _claimed(reply: list[Any]) -> contact_reservation.Claim:
    """The VOLUME script's reply as the core's ``Claim`` (no counters: the script took them)."""
    full = int(reply[0]) == 1
    refused = frozenset(o.decode() if isinstance(o, bytes) else str(o) for o in reply[1:])
    return contact_reservation.Claim(full, refused, ())
