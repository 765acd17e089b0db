"""The pure decision core: eligibility, stages, arbitration, rendering. No Redis, no gRPC."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from common.errors import ConfigurationError
from engine.core.arbitration import GREEDY, arbitrate, priorities
from engine.core.catalog import parse_catalog
from engine.core.contact_rules import QuietHours, parse_clock
from engine.core.customer import CustomerRecord
from engine.core.decision import DecisionCore, DecisionRequest, rule_env
from engine.core.eligibility import Situation, eligible_offers, fallback_offers
from engine.core.lifecycle import parse_stage_rules
from engine.core.rendering import render, template_variables
from engine.core.scoring import ValueOnlyScorer
from engine.settings import Definitions

NAMES = frozenset({"is_customer", "tenure_months", "sms_opt_in"})
NOW = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
CATALOG = """
[channel_audience]
sms = "sms_opt_in == 1"

[[offer]]
id = "everywhere"
category = "a"
value = 10

[[offer]]
id = "web_hero_only"
category = "b"
value = 20
channels = ["web"]
placements = ["home_hero"]

[[offer]]
id = "loyal"
category = "b"
value = 30
audience = "is_customer == 1 and tenure_months >= 24"
stages = ["consideration", "at_risk"]
fallback = true

[[offer]]
id = "summer"
category = "c"
value = 40
valid_from = 2026-06-01
valid_until = 2026-09-01T00:00:00Z
[offer.message]
headline = "Hello $first_name"
sms = "Hi $first_name, summer deal: ${tenure_months} months with us. ${__class__}"
"""


def env(**features: float) -> dict[str, object]:
    values = {"is_customer": 1.0, "tenure_months": 30.0, "sms_opt_in": 1.0, **features}
    return {**values, "channel": "web", "placement": "", "stage": "", "context": {}, "attr": {}}


def ids(offers: list) -> list[str]:  # type: ignore[type-arg]
    return [o.offer_id for o in offers]


def test_eligibility_checks_channel_placement_stage_dates_and_audience() -> None:
    catalog = parse_catalog(CATALOG, NAMES)
    web = Situation("web", "home_hero", "consideration", NOW)
    assert ids(eligible_offers(catalog, web, env())) == [
        "everywhere",
        "web_hero_only",
        "loyal",
        "summer",
    ]
    assert ids(
        eligible_offers(catalog, Situation("web", "footer", "consideration", NOW), env())
    ) == ["everywhere", "loyal", "summer"]
    assert "web_hero_only" not in ids(
        eligible_offers(catalog, Situation("email", "", "consideration", NOW), env())
    )
    assert "loyal" not in ids(
        eligible_offers(catalog, Situation("web", "", "evaluation", NOW), env())
    )
    assert "loyal" not in ids(eligible_offers(catalog, web, env(tenure_months=3)))
    before = Situation("web", "", "consideration", NOW - 1)
    assert "summer" not in ids(eligible_offers(catalog, before, env()))
    after = Situation("web", "", "consideration", datetime(2026, 9, 1, tzinfo=UTC).timestamp())
    assert "summer" not in ids(eligible_offers(catalog, after, env()))
    assert ids(eligible_offers(catalog, web, env(), ["summer", "ghost"])) == ["summer"]


def test_channel_audience_blocks_the_channel_and_its_fallbacks() -> None:
    catalog = parse_catalog(CATALOG, NAMES)
    sms = Situation("sms", "", "consideration", NOW)
    assert eligible_offers(catalog, sms, env(sms_opt_in=1.0))
    assert eligible_offers(catalog, sms, env(sms_opt_in=0.0)) == []
    assert fallback_offers(catalog, sms) == []
    assert ids(fallback_offers(catalog, Situation("web", "", "evaluation", NOW))) == ["loyal"]


OFFER = '[[offer]]\nid = "x"\ncategory = "a"\nvalue = 1\n'


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[[offer]]\nid = "x"\ncategory = "a"\nvalue = 1\naudience = "nope > 1"', "unknown name"),
        ('[[offer]]\nid = "x"\ncategory = "a"\nvalue = 1\nchannels = ["fax"]', "fax"),
        (
            '[[offer]]\nid = "x"\ncategory = "a"\nvalue = 1\n[offer.message]\nsms = "'
            + "x" * 161
            + '"',
            "160",
        ),
        ('[[offer]]\nid = "x"\ncategory = "a"', "value"),
        (
            '[[offer]]\nid = "x"\ncategory = "a"\nvalue = 1\n' * 2,
            "duplicate",
        ),
        (
            '[contact_policy.quiet_hours]\nstart = "9pm"\nend = "08:00"\n' + OFFER,
            "contact_policy.quiet_hours: start and end",
        ),
        (
            '[contact_policy.quiet_hours]\nstart = "21:00"\nend = "08:00"\n'
            'default_timezone = "Europe/Atlantis"\n' + OFFER,
            "default_timezone: unknown time zone 'Europe/Atlantis'",
        ),
        ('[contact_policy.budget]\ndays = 7\nmax = 4\nchannels = ["fax"]\n' + OFFER, "fax"),
        ("[contact_policy.budget]\ndays = 7\n" + OFFER, "contact_policy.budget"),
        # a misspelt key is refused by name, in every table, not silently ignored
        (OFFER + "valid_untill = 2027-01-01\n", r"offer x: unknown keys \['valid_untill'\]"),
        ('[exploraton]\npolicy = "greedy"\n' + OFFER, r"catalog: unknown keys \['exploraton'\]"),
        ("[exploration]\nflor = 0.1\n" + OFFER, r"exploration: unknown keys \['flor'\]"),
        ("[contact_policy]\nchannel_cap = {}\n" + OFFER, r"contact_policy: unknown keys"),
    ],
)
def test_bad_catalogs_fail_at_load_with_a_clear_message(text: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        parse_catalog(text, NAMES)


def test_stage_rules_first_match_wins_and_context_overrides() -> None:
    rules = parse_stage_rules(
        """
        default = "consideration"
        [[rule]]
        stage = "at_risk"
        when = "tenure_months < 2"
        reason = "brand new"
        [[rule]]
        stage = "evaluation"
        when = "tenure_months < 12"
        """,
        NAMES,
    )
    assert rules.derive(env(tenure_months=1)) == ("at_risk", "brand new")
    assert rules.derive(env(tenure_months=5)) == ("evaluation", "tenure_months < 12")
    assert rules.derive(env(tenure_months=50))[0] == "consideration"
    assert rules.derive(env(tenure_months=1), {"stage": "purchase"})[0] == "purchase"
    with pytest.raises(ConfigurationError):
        parse_stage_rules('[[rule]]\nstage = "sleepy"\nwhen = "1 == 1"', NAMES)


def test_arbitration_orders_by_priority_breaks_ties_by_catalog_order_and_limits_categories() -> (
    None
):
    propensity = np.array([0.1, 0.2, 0.1, 0.05])
    value = np.array([100.0, 50.0, 100.0, 400.0])
    lever = np.array([1.0, 1.0, 1.0, 0.5])
    priority = priorities(propensity, value, lever)
    assert priority.tolist() == pytest.approx([10, 10, 10, 10])
    ranked = arbitrate(priority, ["a", "b", "a", "c"], 3)
    assert [r.index for r in ranked] == [0, 1, 3]  # index 2 shares category "a" with 0
    assert [r.rank for r in ranked] == [1, 2, 3]
    assert [
        r.index for r in arbitrate(priority, ["a", "b", "a", "c"], 4, one_per_category=False)
    ] == [0, 1, 2, 3]
    assert arbitrate(np.array([1.0, 3.0, 2.0]), ["x", "y", "z"], 1)[0].index == 1


def test_rendering_per_channel_is_safe_and_fits_sms() -> None:
    catalog = parse_catalog(CATALOG, NAMES)
    summer = catalog.by_id["summer"]
    variables = template_variables(
        ("tenure_months",), np.array([30.0]), {"first_name": "Ana" * 60}, {}
    )
    sms = render(summer, "sms", "consideration", variables)
    assert len(sms.body) <= 160 and sms.body.endswith("...")  # never "…": not GSM-7
    assert sms.body.startswith("Hi AnaAna") and sms.sms_encoding == "GSM-7"
    accented = template_variables((), np.array([]), {"first_name": "Zoë" + "ş" * 80}, {})
    ucs2 = render(summer, "sms", "consideration", accented)
    assert ucs2.sms_encoding == "UCS-2" and len(ucs2.body) <= 70
    assert (
        "${__class__}"
        in render(summer, "sms", "consideration", {"first_name": "A", "tenure_months": "3"}).body
    )
    email = render(summer, "email", "consideration", {"first_name": "Bo"})
    assert email.headline == "Hello Bo"
    agent = render(catalog.by_id["everywhere"], "call_center", "consideration", {})
    assert agent.treatment_id == "everywhere/call_center/default"


def test_core_decides_with_the_value_only_baseline(definitions: Definitions) -> None:
    greedy = replace(definitions.catalog, exploration=GREEDY)  # the demo explores
    core = DecisionCore(definitions.schema, greedy, definitions.stage_rules, ValueOnlyScorer())
    schema = definitions.schema
    batch = schema.decode_batch(
        schema.encode_batch({"is_customer": 1, "tenure_months": 40, "has_fibre": 0})
    )
    record = CustomerRecord("c1", True, batch, {"first_name": "Ana"}, {})
    decision = core.decide(DecisionRequest("c1", "web", limit=3, explain=True), record, NOW)
    values = [a.value for a in decision.actions]
    assert values == sorted(values, reverse=True)
    assert decision.actions[0].offer_id == "fibre_broadband"  # highest value, eligible
    assert decision.model_version == "value-only"
    assert len(decision.candidates) >= len(decision.actions)
    env = rule_env(schema.names, decision.served.features, {}, DecisionRequest("c1", "web"))
    assert env["tenure_months"] == 40


@pytest.mark.parametrize(
    ("start", "end", "clock", "quiet"),
    [
        ("21:00", "08:00", "20:59", False),
        ("21:00", "08:00", "21:00", True),
        ("21:00", "08:00", "03:30", True),
        ("21:00", "08:00", "07:59", True),
        ("21:00", "08:00", "08:00", False),
        ("12:00", "14:00", "13:15", True),
        ("12:00", "14:00", "14:00", False),
    ],
)
def test_quiet_hours_in_the_customers_zone(start: str, end: str, clock: str, quiet: bool) -> None:
    hours = QuietHours(
        parse_clock(start) or 0, parse_clock(end) or 0, frozenset({"sms"}), "tz", "UTC"
    )
    # 2026-01-15 at ``clock`` in Tokyo (UTC+9, no daylight saving)
    local = datetime.strptime(f"2026-01-15 {clock}", "%Y-%m-%d %H:%M")
    now = local.replace(tzinfo=ZoneInfo("Asia/Tokyo")).timestamp()
    why = hours.block("sms", {"tz": "Asia/Tokyo"}, now)
    assert bool(why) == quiet
    if quiet:
        assert (
            why == f"quiet hours: no sms from {start} to {end} in Asia/Tokyo; it is {clock} there"
        )
    assert hours.block("web", {"tz": "Asia/Tokyo"}, now) == ""


@pytest.mark.parametrize(
    ("zone", "clock", "ends"),
    [
        ("Asia/Tokyo", "2026-01-15 23:00", "2026-01-16 08:00"),  # over midnight: the next day
        ("Asia/Tokyo", "2026-01-16 07:59", "2026-01-16 08:00"),
        ("Asia/Tokyo", "2026-01-15 20:59", None),  # not quiet: nothing to wait for
        # the night daylight saving starts in New York (02:00 -> 03:00): 08:00 is still 08:00
        ("America/New_York", "2026-03-07 23:00", "2026-03-08 08:00"),
    ],
)
def test_quiet_hours_end_at_their_end_in_the_customers_zone(
    zone: str, clock: str, ends: str | None
) -> None:
    hours = QuietHours(21 * 60, 8 * 60, frozenset({"sms"}), "tz", "UTC")
    place = ZoneInfo(zone)
    now = datetime.strptime(clock, "%Y-%m-%d %H:%M").replace(tzinfo=place).timestamp()
    end = hours.end_after("sms", {"tz": zone}, now)
    if ends is None:
        assert end is None
        return
    assert end is not None
    assert datetime.fromtimestamp(end, place).strftime("%Y-%m-%d %H:%M") == ends
    assert hours.block("sms", {"tz": zone}, end) == ""  # let through at its end
    assert hours.block("sms", {"tz": zone}, end - 60) != ""  # and not a minute before
    assert hours.end_after("web", {"tz": zone}, now) is None
