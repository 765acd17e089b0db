"""Volume limits over the whole customer base: an offer limited to N a day is made
exactly N times across replicas, and decisions after that choose the next best, saying
why (engine/core/contact_rules.Volume, the store's claim, volume_watch.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from arbiter.v1 import common_pb2, decision_pb2
from common.errors import ConfigurationError
from engine.core.catalog import parse_catalog
from tests.conftest import ServerThread, catalog_variant, sample, scrape, zone_at

LIMIT = 20
CUSTOMERS = 160


def limited(path: Path, most: int) -> Path:
    """The demo catalog (daytime, greedy) with fibre_broadband limited to ``most`` a day
    and worth so much more that every customer it suits would get it."""
    return catalog_variant(
        path,
        {
            'default_timezone = "Europe/London"': f'default_timezone = "{zone_at(12)}"',
            'policy = "thompson"': 'policy = "greedy"',
            'audience = "has_fibre == 0"\nfallback = true\n': (
                'audience = "has_fibre == 0"\nfallback = true\nlever = 50\n'
                f"policy = {{ volume = [{{ days = 1, max = {most} }}] }}\n"
            ),
        },
    )


def test_an_offer_limited_to_n_a_day_is_made_n_times_across_replicas_then_the_next_best(
    server_factory: Callable[..., ServerThread],
    redis_or_cluster: tuple[str, redis.Redis | redis.RedisCluster],
    tmp_path: Path,
) -> None:
    redis_url, client = redis_or_cluster
    catalog = limited(tmp_path / "catalog.toml", LIMIT)
    budgets = {"feature_timeout_ms": 2000, "reserve_timeout_ms": 2000, "volume_seconds": 0.1}
    replicas = [
        server_factory(redis_url, catalog_path=catalog, metrics_port=0, **budgets),
        server_factory(redis_url, catalog_path=catalog, **budgets),
    ]
    answers: list[decision_pb2.DecideResponse] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def calls(worker: int) -> None:
        start.wait()
        for i in range(worker, CUSTOMERS, 8):
            request = decision_pb2.DecideRequest(
                customer_id=f"cust-{i + 1:06d}",
                channel=common_pb2.CHANNEL_WEB,
                limit=1,
                explain=True,
            )
            answer = replicas[i % 2].decisions.Decide(request, timeout=5)
            with lock:
                answers.append(answer)

    threads = [threading.Thread(target=calls, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    made = [a for a in answers if a.actions and a.actions[0].offer_id == "fibre_broadband"]
    assert len(made) == LIMIT  # exactly, across both replicas and 8 callers at once
    day = int(time.time() // 86400)
    counter = f"arb:{{volume}}:offer:fibre_broadband|86400|{day}"
    assert int(client.get(counter) or 0) == LIMIT
    # After the limit: the customers it suits get the next best, told why.
    kept_out = [
        a
        for a in answers
        if any(
            e.offer_id == "fibre_broadband" and e.reason.startswith("volume limit reached")
            for e in a.excluded
        )
    ]
    assert len(kept_out) > LIMIT  # demand beyond the limit: the test means something
    assert sum(1 for a in kept_out if a.actions) >= len(kept_out) * 0.8
    reasons = {e.reason for a in kept_out for e in a.excluded if e.offer_id == "fibre_broadband"}
    assert f"volume limit reached: {LIMIT} of {LIMIT} today (UTC)" in reasons, reasons
    assert not [a for a in answers if a.degraded]
    # and /metrics shows the limit's use, once a read of the counters has seen it
    limit = "offer:fibre_broadband|86400"
    port = replicas[0].metrics_port
    assert port
    for _ in range(50):
        if sample(scrape(port), "arbiter_volume_used", limit=limit) == LIMIT:
            break
        time.sleep(0.05)
    assert sample(scrape(port), "arbiter_volume_used", limit=limit) == LIMIT
    assert sample(scrape(port), "arbiter_volume_max", limit=limit) == LIMIT


def test_a_campaign_that_meets_a_limit_chooses_the_next_best_for_everyone_after(
    server_factory: Callable[..., ServerThread], loaded: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    # The replica reads the counters once, at start (a minute between reads): the whole
    # campaign believes the limit free, meets it at reservation, and must decide again for
    # the customers it left without an offer.
    catalog = limited(tmp_path / "catalog.toml", 5)
    server = server_factory(redis_url, catalog_path=catalog, volume_seconds=60)
    requests = (
        decision_pb2.DecideBatchRequest(
            request=decision_pb2.DecideRequest(
                customer_id=f"cust-{i:06d}", channel=common_pb2.CHANNEL_WEB, limit=1, explain=True
            )
        )
        for i in range(1, 201)
    )
    answers = [a.response for a in server.decisions.DecideBatch(requests, timeout=60)]
    made = [a for a in answers if a.actions and a.actions[0].offer_id == "fibre_broadband"]
    assert len(made) == 5
    lost = [
        a
        for a in answers
        if any(e.offer_id == "fibre_broadband" and "volume" in e.reason for e in a.excluded)
    ]
    assert len(lost) > 20  # the limit bound: the test means something
    assert not [a for a in lost if not a.actions]  # each got the next best
    assert {e.reason for a in lost for e in a.excluded if e.offer_id == "fibre_broadband"} == {
        "volume limit reached: 5 of 5 today (UTC)"
    }


def test_a_channel_limit_holds_decisions_on_it_and_limits_are_checked_at_load() -> None:
    names = frozenset(["has_fibre"])
    offer = '[[offer]]\nid = "x"\ncategory = "a"\nvalue = 1\n'
    catalog = parse_catalog(
        "[contact_policy.channel_volume]\ncall_center = [{ hours = 1, max = 40 }]\n"
        + offer
        + "policy = { volume = [{ days = 1, max = 500 }] }\n",
        names,
    )
    assert catalog.contact_policy.channel_volume["call_center"][0].max == 40
    assert catalog.by_id["x"].policy.volume[0].window_seconds == 86400
    with pytest.raises(ConfigurationError, match="channel_volume"):
        parse_catalog(
            "[contact_policy.channel_volume]\nfax = [{ hours = 1, max = 4 }]\n" + offer, names
        )
    with pytest.raises(ConfigurationError, match=r"offer x.policy.volume"):
        parse_catalog(offer + "policy = { volume = [{ max = 5 }] }\n", names)
