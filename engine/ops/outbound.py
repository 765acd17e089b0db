"""`arbiter outbound`: the delivery streams senders read (docs/outbound.md).

    arbiter outbound tail [--channel email] [--count 10] [--follow] [--json]
    arbiter outbound status
    arbiter outbound waiting [--customer ID] [--count 10]
    arbiter outbound pause|resume (--trigger ID | --channel NAME)
    arbiter outbound runs [--trigger ID]
    arbiter outbound rerun --trigger ID

``tail`` prints the newest messages of a channel's stream (and, with ``--follow``, those
that come, until Ctrl-C); ``status`` each outbound channel's stream: its length, and per
consumer group of senders, what they have been handed and not acknowledged and how far
behind they are, and what is paused; ``waiting`` the triggers scheduled and not yet
fired, soonest first (a customer's, with ``--customer``). ``pause`` stops a trigger, or
every trigger on a channel, at once on every replica (what is due waits; a channel
paused is skipped among a trigger's channels); ``resume`` lets it go on within 30
seconds. ``runs`` shows each always-on run (``[[outbound]]``): when it sends, and its
passes of today and yesterday (UTC dates): how far over the customer base, whom it
scheduled, and what its messages came to; ``rerun`` has today's pass go over the base
again (customers loaded since; nobody is scheduled twice).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from common.vocabulary import CHANNELS
from engine.clients.cli.command import Command
from engine.core.triggers import RUN_EVENT, WEEKDAYS, Run
from engine.ops.admin import redis_url
from engine.service.outbound_runs import NOT_IN_SEGMENT, UNREADABLE, cycle_of
from engine.settings import CommonSettings, load_definitions
from feature_store import keys
from feature_store.outbound_runs import PASS_FIELDS
from feature_store.redis_client import SyncClient, connect_sync
from feature_store.triggers import ALREADY_PENDING, NOT_REELIGIBLE, SCHEDULED

FOLLOW_BLOCK_MS = 1000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def line(entry_id: str, fields: Mapping[str, str]) -> str:
    """One message as `tail` prints it."""
    try:
        copy = json.loads(fields.get("message", "{}"))
    except ValueError:
        copy = {}
    words = copy.get("headline") or copy.get("body", "")
    trigger = fields.get("trigger_id", "")
    return (
        f"{entry_id}  {fields.get('channel', '?'):<5} {fields.get('customer_id', '?')}"
        f"  {fields.get('offer_id', '?')}"
        + (f"  trigger {trigger}" if trigger else "")
        + f"  decision {fields.get('decision_id', '?')}  {words!r}"
    )


def _print(entries: Any, as_json: bool) -> str:
    """Prints ``entries`` (XRANGE's shape); the last id printed ("" when none)."""
    last = ""
    for entry_id, raw in entries:
        last = _text(entry_id)
        fields = {_text(k): _text(v) for k, v in raw.items()}
        print(json.dumps({"id": last, **fields}) if as_json else line(last, fields), flush=True)
    return last


def tail(client: SyncClient, channel: str, count: int, follow: bool, as_json: bool) -> int:
    stream = keys.outbound_stream(channel)
    newest: Any = client.xrevrange(stream, count=count)
    last = _print(list(reversed(newest)), as_json) or "$"
    if not newest and not follow:
        print(f"no messages on {stream}")
    try:
        while follow:
            found: Any = client.xread({stream: last}, block=FOLLOW_BLOCK_MS)
            for _, entries in found or []:
                last = _print(entries, as_json) or last
    except KeyboardInterrupt:
        pass
    return 0


def pause(client: SyncClient, subject: str, paused: bool) -> int:
    if paused:
        client.hset(keys.TRIGGER_PAUSED, subject, f"{time.time():.0f}")
        print(f"paused {subject.replace(':', ' ')}: due triggers wait until it is resumed")
    else:
        removed = client.hdel(keys.TRIGGER_PAUSED, subject)
        print(f"resumed {subject.replace(':', ' ')}" if removed else f"{subject} was not paused")
    return 0


def waiting(client: SyncClient, customer: str | None, count: int) -> int:
    """The triggers waiting, soonest first: when each is due, for whom, and why."""
    buckets = [keys.trigger_bucket(customer)] if customer else list(range(keys.TRIGGER_BUCKETS))
    found: list[tuple[float, str, str]] = []
    total = 0
    for bucket in buckets:
        due_key, pending_key, _ = keys.trigger_keys(bucket)
        if customer:
            members: Any = client.zrangebyscore(due_key, "-inf", "+inf", withscores=True)
            members = [(m, s) for m, s in members if _text(m).startswith(f"{customer}|")]
        else:
            total += int(client.zcard(due_key))
            members = client.zrange(due_key, 0, count - 1, withscores=True)
        for member, score in members:
            entry: Any = client.hget(pending_key, member)
            found.append((float(score), _text(member), _text(entry) if entry else ""))
    found.sort()
    if not found:
        print(f"no triggers waiting{f' for {customer}' if customer else ''}")
        return 0
    if not customer:
        print(f"{total} triggers waiting; the soonest:")
    for score, member, raw in found[:count]:
        who, _, trigger = member.partition("|")
        event = json.loads(raw).get("event_type", "?") if raw else "?"
        why = "its daily run" if event == RUN_EVENT else f"after {event}"
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(score))
        print(f"  {when}  {trigger} for {who} ({why})")
    return 0


def status(client: SyncClient, channels: list[str]) -> int:
    paused: Any = client.hkeys(keys.TRIGGER_PAUSED)
    for name in sorted(_text(p) for p in paused):
        print(f"paused: {name.replace(':', ' ')}")
    for channel in channels:
        stream = keys.outbound_stream(channel)
        length = int(client.xlen(stream))
        print(f"{channel:<5} {stream}: {length} messages")
        if not length:
            continue
        groups: Any = client.xinfo_groups(stream)
        if not groups:
            print("      no consumer group reads it yet (docs/outbound.md: XGROUP CREATE)")
        for group in groups:
            info = {_text(k): v for k, v in group.items()}
            lag = info.get("lag")  # Redis 7 and later
            print(
                f"      group {_text(info.get('name'))}: {info.get('consumers', 0)} consumers,"
                f" {info.get('pending', 0)} handed out and not acknowledged"
                + (f", {lag} not yet read" if lag is not None else "")
            )
    return 0


def runs(client: SyncClient, chosen: Sequence[Run], now: float) -> int:
    if not chosen:
        print("no outbound runs in the catalog ([[outbound]], docs/outbound.md)")
    for run in chosen:
        days = sorted(run.days)
        when = "every day" if len(days) == 7 else ", ".join(WEEKDAYS[d] for d in days)
        hour, minute = divmod(run.at_minute, 60)
        segment = run.segment.source if run.segment else "every customer"
        print(
            f"{run.run_id}: {when} at {hour:02d}:{minute:02d} in each customer's zone, on"
            f" {', '.join(run.trigger.channels)}; segment: {segment}"
        )
        for cycle in (cycle_of(now), cycle_of(now - 86400)):
            raw: Any = client.hgetall(keys.run_keys(run.run_id, cycle)[1])
            print(f"  {cycle}: {pass_line({_text(k): _text(v) for k, v in raw.items()})}")
    return 0


def pass_line(state: Mapping[str, str]) -> str:
    """A day's pass of a run, as `runs` prints it."""
    if not state:
        return "not begun"

    def n(field: str) -> int:
        return int(state.get(field, 0))

    def at(field: str) -> str:
        return time.strftime("%H:%M:%S UTC", time.gmtime(float(state[field])))

    if "finished" in state:
        where = f"went over {n('scanned')} customers ({at('started')} to {at('finished')})"
    elif "started" in state:
        where = f"going over the customer base: {n('scanned')} so far (since {at('started')})"
    else:  # made again (rerun) and not begun yet: what its messages came to stays
        where = "to be made again, not begun"
    outcomes = ", ".join(
        f"{n(field)} {label}"
        for field, label in (
            (SCHEDULED, "scheduled"),
            (NOT_IN_SEGMENT, "not in the segment"),
            (ALREADY_PENDING, "already waiting"),
            (NOT_REELIGIBLE, "sent within the re-eligibility window"),
            (UNREADABLE, "unreadable"),
        )
        if n(field) or field == SCHEDULED
    )
    suppressed = {
        k.split(":", 1)[1]: int(v) for k, v in state.items() if k.startswith("suppressed:")
    }
    why = ", ".join(f"{reason} {count}" for reason, count in sorted(suppressed.items()))
    fate = f"; sent {n('sent')}, suppressed {sum(suppressed.values())}" + (
        f" ({why})" if why else ""
    )
    return f"{where}: {outcomes}{fate}"


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action", choices=("tail", "status", "waiting", "pause", "resume", "runs", "rerun")
    )
    p.add_argument("--customer", help="waiting: that customer's")
    p.add_argument("--channel", choices=CHANNELS, help="tail: its stream (email); pause: it")
    p.add_argument(
        "--trigger", help="pause, resume, runs, rerun: the trigger or run (its id in the catalog)"
    )
    p.add_argument("--count", type=int, default=10, help="tail, waiting: how many shown")
    p.add_argument("--follow", action="store_true", help="tail: and those that come")
    p.add_argument("--json", action="store_true", help="tail: a JSON object a line")


def _run(args: argparse.Namespace) -> int:
    settings = CommonSettings()
    client = connect_sync(redis_url(settings))
    try:
        if args.action == "tail":
            channel = args.channel or "email"
            return tail(client, channel, max(args.count, 0), args.follow, args.json)
        if args.action == "waiting":
            return waiting(client, args.customer, max(args.count, 1))
        if args.action in ("runs", "rerun"):
            catalog_runs = load_definitions(settings).catalog.triggers.run_by_id
            if args.trigger and args.trigger not in catalog_runs:
                known = ", ".join(sorted(catalog_runs)) or "none"
                raise SystemExit(
                    f"--trigger: no outbound run {args.trigger!r} (the catalog's: {known})"
                )
            if args.action == "runs":
                chosen = [r for r in catalog_runs.values() if args.trigger in (None, r.run_id)]
                return runs(client, chosen, time.time())
            if not args.trigger:
                raise SystemExit("arbiter outbound rerun: --trigger ID (the run's id)")
            client.hdel(keys.run_keys(args.trigger, cycle_of(time.time()))[1], *PASS_FIELDS)
            print(
                f"today's pass of {args.trigger} goes over the customer base again within"
                " seconds; nobody waiting for it is scheduled twice, nor sent it twice a day"
            )
            return 0
        if args.action in ("pause", "resume"):
            if bool(args.trigger) == bool(args.channel):
                raise SystemExit(f"arbiter outbound {args.action}: --trigger ID or --channel NAME")
            if args.trigger:
                triggers = load_definitions(settings).catalog.triggers.by_id
                if args.trigger not in triggers:
                    known = ", ".join(sorted(triggers)) or "none"
                    raise SystemExit(
                        f"--trigger: no trigger {args.trigger!r} (the catalog's: {known})"
                    )
            subject = f"trigger:{args.trigger}" if args.trigger else f"channel:{args.channel}"
            return pause(client, subject, args.action == "pause")
        outbound = load_definitions(settings).catalog.contact_policy.outbound
        return status(client, sorted(outbound))
    finally:
        client.close()


COMMAND = Command(
    "outbound", "the delivery streams senders read: tail a channel's, or each one's status",
    _arguments, _run,
)  # fmt: skip
