"""`arbiter whatif` against the truth of a seeded small simulated world: the changed
stack's estimate from the logs, and the same days served by it."""

from __future__ import annotations

from pathlib import Path

from training.simulation import whatif_check


def test_a_cap_change_lands_in_its_interval_and_a_new_offer_is_refused(tmp_path: Path) -> None:
    changes = {
        "cap": whatif_check.cap(7, 1),
        "new": whatif_check.new_offer("device_upgrade_pro", "device_upgrade_5g", 400.0),
    }
    logged, (cap, new) = whatif_check.check(
        tmp_path,
        days=2,
        customers_per_day=800,
        world_size=1200,
        changes=changes,
        policy="epsilon",  # every candidate keeps a share: weights stay bounded
        epsilon=0.3,
    )

    r = cap.result
    assert not r.refused and r.fidelity > 0.99  # the replay rebuilds what was served
    dr = r.changed["dr"]
    assert dr.low <= cap.live <= dr.high  # the same days, served by the changed stack
    assert dr.low <= cap.estimand <= dr.high
    assert dr.high - dr.low < 0.8 * cap.live  # an interval that says something
    # A cap of 1 a week binds in a small world of returning customers: value is lost.
    assert cap.live < logged

    assert new.result.refused and not new.result.changed
    assert "device_upgrade_pro" in new.result.refused and "never logged" in new.result.refused
    assert new.live != new.live  # nan: not served without an estimate to check
