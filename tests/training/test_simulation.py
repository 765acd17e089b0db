"""The closed loop end to end: simulated days against a real service, retraining between."""

from __future__ import annotations

import csv
import tomllib
from pathlib import Path

import pytest
import redis

from feature_store import keys
from training import simulation
from training.cli import _catalog_changes
from training.simulation import traffic


def test_two_days_of_the_loop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = simulation.run(
        tmp_path / "sim",
        days=2,
        customers_per_day=150,
        epsilon=0.2,
        world_size=1000,
        progress=False,
        retrains_per_day=2,
        min_holdout_decisions=50,
        first_rows=6000,  # the first model's simulated logs (a run's default: 30,000)
        changed={"adaptive": {"new_offer_share": 0.3}},
    )

    assert [r.day for r in results] == [1, 2]
    for r in results:
        assert r.decisions > 100
        assert r.oracle >= r.policy > r.random > 0  # the oracle takes the best candidate
        assert r.oracle >= r.greedy > r.random
        assert r.oracle >= r.value_only
        assert 0 <= r.acceptance <= 1
        assert 0 < r.expected_acceptance < 1
        assert [t.after for t in r.retrains] == [75, 150]
    retrains = [t for r in results for t in r.retrains]
    assert all(t.version for t in retrains), [t.why for t in retrains]  # each judged and saved
    judged = [t for t in retrains if t.lift is not None]
    assert judged and all(t.true_lift is not None for t in judged)
    assert all(t.lift is not None and t.lift.low <= t.lift.value <= t.lift.high for t in judged)
    report = (tmp_path / "sim" / "report.html").read_text()
    assert "<svg" in report and "greedy/oracle" in report
    assert len((tmp_path / "sim" / "days.csv").read_text().splitlines()) == 3
    served = tomllib.loads((tmp_path / "sim" / "catalog.toml").read_text())["adaptive"]
    assert served["new_offer_share"] == 0.3 and served["mature_positives"] == 20  # kept
    with (tmp_path / "sim" / "decisions.csv").open() as rows:
        decisions = list(csv.DictReader(rows))
    assert len(decisions) == sum(r.decisions for r in results)
    assert {d["day"] for d in decisions} == {"1", "2"}
    assert all(float(d["oracle"]) >= float(d["served_value"]) for d in decisions)
    printed = capsys.readouterr().out
    assert "served/oracle" in printed and "report: " in printed
    assert "lift estimates (paired DR): the true lift inside the 95% interval" in printed


@pytest.mark.parametrize("seconds", [1_764_000_000.25, 1_764_000_000.95, 1_764_000_000.999])
def test_outcome_times_keep_their_second(seconds: float) -> None:
    # An outcome stamped before its decision falls outside the attribution window: a
    # fraction of a second above .9 must carry into the seconds.
    stamp = traffic.outcome_timestamp(seconds)
    assert stamp.seconds + stamp.nanos / 1e9 == pytest.approx(seconds, abs=1e-6)


def test_a_simulated_day_ages_contacts_and_cooldowns(redis_client: redis.Redis) -> None:
    now = 1_764_000_000.0
    contacts = keys.customer_key("cust-000001", keys.CONTACTS)
    policy = keys.customer_key("cust-000001", keys.POLICY)
    redis_client.zadd(contacts, {"d1|fibre_upgrade|web": now, "d2|roaming_pack|web": now - 10})
    redis_client.hset(policy, mapping={"cool:roaming_pack": now + 5, "held:fibre_upgrade": now})

    traffic.age_contact_state(redis_client, ["cust-000001", "cust-000002"], 86_400)

    assert redis_client.zrange(contacts, 0, -1, withscores=True) == [
        (b"d2|roaming_pack|web", now - 10 - 86_400),
        (b"d1|fibre_upgrade|web", now - 86_400),
    ]
    assert float(redis_client.hget(policy, "cool:roaming_pack") or 0) == now + 5 - 86_400
    assert float(redis_client.hget(policy, "held:fibre_upgrade") or 0) == now  # stays held
    assert not redis_client.exists(keys.customer_key("cust-000002", keys.CONTACTS))


def test_catalog_settings_for_a_run_are_read_as_toml() -> None:
    changed = _catalog_changes(
        ["adaptive.new_offer_share=0.2", "adaptive.new_offer_prior=none", "x.flags=[1, 2]"], 0.25
    )
    assert changed == {
        "exploration": {"sd_scale": 0.25},
        "adaptive": {"new_offer_share": 0.2, "new_offer_prior": "none"},
        "x": {"flags": [1, 2]},
    }
    with pytest.raises(ValueError, match=r"'share=0\.2': TABLE\.KEY=VALUE"):
        _catalog_changes(["share=0.2"], None)
