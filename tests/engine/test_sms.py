"""SMS bodies fit one segment of their encoding, and cutting one never changes it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.core import sms


@given(st.text(max_size=400))
def test_any_text_fits_one_segment_of_its_encoding(text: str) -> None:
    body, kind = sms.fit(text)
    assert kind == sms.encoding(text)
    if kind == "GSM-7":
        assert sms.encoding(body) == "GSM-7"  # the cut added nothing outside GSM-7
        assert sum(2 if c in "^{}\\[~]|€\f" else 1 for c in body) <= 160
    else:
        assert len(body) <= 70
    if body != text:
        assert body.endswith("...")


def test_the_extension_table_counts_twice() -> None:
    assert sms.fit("€" * 80) == ("€" * 80, "GSM-7")
    body, _ = sms.fit("€" * 81)
    assert body == "€" * 78 + "..."  # 156 + 3 septets
