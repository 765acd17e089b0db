"""Decision ids that carry their own proof, so ``ReportOutcome`` checks one without a
lookup: an id names when it was made and holds, for each action, a tag that only the
server's secret could compute for this customer and that offer.

    d1_<decided at, ms, hex>_<nonce, 16 hex>_<key id, 8 hex>_<tag per action, 8 chars each>

A tag is the first 6 bytes of HMAC-SHA256(secret, customer | decided at | nonce | offer),
base64url: forging one is a 2^-48 guess. Secrets rotate: the first signs, every one
verifies (the key id picks it), so a new secret goes first and the old one stays until
the outcomes of its decisions are in (the attribution window). Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from common.errors import InvalidArgument, NotFound

VERSION = "d1"
TAG_CHARS = 8  # 6 bytes, base64url
_FORMAT = re.compile(
    rf"{VERSION}_(?P<ms>[0-9a-f]{{1,12}})_(?P<nonce>[0-9a-f]{{16}})_(?P<key>[0-9a-f]{{8}})"
    rf"_(?P<tags>(?:[A-Za-z0-9_-]{{{TAG_CHARS}}})*)"
)
MIN_SECRET_BYTES = 16


def key_id(secret: bytes) -> str:
    return hashlib.sha256(secret).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class VerifiedDecision:
    decided_at: float  # unix seconds


class DecisionIds:
    """Makes and checks decision ids with ``secrets`` (the first signs)."""

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets or any(len(s) < MIN_SECRET_BYTES for s in secrets):
            raise ValueError(f"decision secrets: at least one, each {MIN_SECRET_BYTES}+ bytes")
        self._signing = secrets[0]
        self._by_id = {key_id(s): s for s in secrets}

    def new(self, customer_id: str, offer_ids: Sequence[str], decided_at: float) -> str:
        ms = f"{int(decided_at * 1000):x}"
        nonce = os.urandom(8).hex()
        tags = "".join(self._tag(self._signing, customer_id, ms, nonce, o) for o in offer_ids)
        return f"{VERSION}_{ms}_{nonce}_{key_id(self._signing)}_{tags}"

    def verify(
        self,
        decision_id: str,
        customer_id: str,
        offer_id: str,
        offers: Collection[str] = (),
    ) -> VerifiedDecision:
        """When the decision was made, if ``offer_id`` was one of its actions for
        ``customer_id``. Raises NotFound for an id this server did not make,
        InvalidArgument for an offer that was not in the decision, or for a decision made
        for another customer (or altered): told apart by trying the catalog's ``offers``
        (on this error path only), so that the message names the caller's mistake."""
        match = _FORMAT.fullmatch(decision_id)
        secret = self._by_id.get(match["key"]) if match else None
        if match is None or secret is None:
            raise NotFound(f"decision_id: no decision {decision_id[:64]!r}")
        ms, nonce, tags = match["ms"], match["nonce"], match["tags"]
        wanted = self._tag(secret, customer_id, ms, nonce, offer_id)
        found = any(
            hmac.compare_digest(wanted, tags[i : i + TAG_CHARS])
            for i in range(0, len(tags), TAG_CHARS)
        )
        if not found:
            if not tags:
                raise InvalidArgument("offer_id", "the decision made no offer")
            # The caller's mistake either way, and no help to a forger: only the holder
            # of this customer's decision id learns which offers it made.
            made = [
                o
                for o in offers
                if any(
                    hmac.compare_digest(
                        self._tag(secret, customer_id, ms, nonce, o), tags[i : i + TAG_CHARS]
                    )
                    for i in range(0, len(tags), TAG_CHARS)
                )
            ]
            if offers and not made:
                raise InvalidArgument(
                    "decision_id",
                    f"not a decision made for {customer_id[:64]!r} (another customer's"
                    " decision, or an altered id)",
                )
            actions = f" (its actions: {', '.join(made)})" if made else ""
            raise InvalidArgument(
                "offer_id", f"{offer_id[:64]!r} was not an action of that decision{actions}"
            )
        return VerifiedDecision(int(ms, 16) / 1000)

    @staticmethod
    def _tag(secret: bytes, customer_id: str, ms: str, nonce: str, offer_id: str) -> str:
        message = "\x1f".join((customer_id, ms, nonce, offer_id)).encode()
        digest = hmac.new(secret, message, hashlib.sha256).digest()[:6]
        return base64.urlsafe_b64encode(digest).decode()
