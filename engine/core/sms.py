"""SMS bodies that fit one segment: GSM-7 (160 septets, the characters of GSM 03.38; those
of its extension table take two) or, when the text needs any other character, UCS-2 (70).
Truncation ends with "..." (GSM-7 itself), never a character that would switch the whole
message to UCS-2."""

from __future__ import annotations

GSM7_LIMIT = 160
UCS2_LIMIT = 70
# GSM 03.38 basic character set and, below, its extension table (two septets each).
_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_EXTENDED = frozenset("^{}\\[~]|€\f")
ELLIPSIS = "..."


def encoding(text: str) -> str:
    """ "GSM-7" when every character is in GSM 03.38, else "UCS-2"."""
    return "GSM-7" if all(c in _BASIC or c in _EXTENDED for c in text) else "UCS-2"


def _septets(text: str) -> int:
    return sum(2 if c in _EXTENDED else 1 for c in text)


def fit(text: str) -> tuple[str, str]:
    """``text`` cut to one segment of its encoding, and that encoding."""
    kind = encoding(text)
    if kind == "GSM-7":
        if _septets(text) <= GSM7_LIMIT:
            return text, kind
        cut = text
        while _septets(cut) > GSM7_LIMIT - len(ELLIPSIS):
            cut = cut[:-1]
        return cut.rstrip() + ELLIPSIS, kind
    if len(text) <= UCS2_LIMIT:
        return text, kind
    return text[: UCS2_LIMIT - len(ELLIPSIS)].rstrip() + ELLIPSIS, kind
