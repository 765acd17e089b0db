"""Decision ids prove their actions: any change to one is refused; secrets rotate."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import InvalidArgument, NotFound
from engine.core.decision_id import DecisionIds

OLD, NEW = b"o" * 32, b"n" * 32
ALPHABET = "0123456789abcdefABCDEF_-xyz"


def test_an_id_verifies_its_actions_for_its_customer_only() -> None:
    ids = DecisionIds([NEW])
    decision_id = ids.new("cust-1", ["a", "b"], 1_800_000_000.25)
    assert ids.verify(decision_id, "cust-1", "b").decided_at == 1_800_000_000.25
    with pytest.raises(InvalidArgument, match="offer_id"):
        ids.verify(decision_id, "cust-1", "c")
    with pytest.raises(InvalidArgument):
        ids.verify(decision_id, "cust-2", "a")
    # with the catalog's offers, the real mistake is named
    catalog = ("a", "b", "c")
    with pytest.raises(InvalidArgument, match=r"'c' was not an action .*\(its actions: a, b\)"):
        ids.verify(decision_id, "cust-1", "c", catalog)
    with pytest.raises(InvalidArgument, match="not a decision made for 'cust-2'") as refused:
        ids.verify(decision_id, "cust-2", "a", catalog)
    assert refused.value.field == "decision_id"
    with pytest.raises(NotFound):
        DecisionIds([OLD]).verify(decision_id, "cust-1", "a")  # another server's secret
    with pytest.raises(InvalidArgument, match="no offer"):
        ids.verify(ids.new("cust-1", [], 1.0), "cust-1", "a")


def test_secrets_rotate_the_first_signs_all_verify() -> None:
    before = DecisionIds([OLD]).new("cust-1", ["a"], 1.0)
    rotated = DecisionIds([NEW, OLD])
    assert rotated.verify(before, "cust-1", "a").decided_at == 1.0
    after = rotated.new("cust-1", ["a"], 2.0)
    with pytest.raises(NotFound):
        DecisionIds([OLD]).verify(after, "cust-1", "a")


@given(position=st.integers(0, 200), char=st.sampled_from(ALPHABET))
def test_any_change_of_one_character_is_refused(position: int, char: str) -> None:
    ids = DecisionIds([NEW])
    decision_id = ids.new("cust-1", ["a", "b", "c"], 1_800_000_000.0)
    at = position % len(decision_id)
    changed = decision_id[:at] + char + decision_id[at + 1 :]
    if changed == decision_id:
        return
    tags_at = len("_".join(decision_id.split("_", 4)[:4])) + 1
    # a change before the tags breaks every action; one inside a tag breaks that action's
    touched = ("a", "b", "c") if at < tags_at else ("abc"[(at - tags_at) // 8],)
    for offer in touched:
        with pytest.raises((NotFound, InvalidArgument)):
            ids.verify(changed, "cust-1", offer)
