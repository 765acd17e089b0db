"""Rendering: the offer's treatment for the channel and life-cycle stage.

Templates use ``$name`` placeholders (``string.Template``): substitution only, no
attribute access or code, and unknown placeholders are left as written. Channel rules:
web and app show headline, body, call to action and a link (the app prefers a deep
link); email's headline is the subject; SMS is one body of at most 160 characters; the
call center gets an agent script with headline and body as a summary.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from string import Template

import numpy as np

from engine.core import sms
from engine.core.catalog import Offer


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    headline: str = ""
    body: str = ""
    call_to_action: str = ""
    url: str = ""
    agent_script: str = ""
    treatment_id: str = ""
    sms_encoding: str = ""  # SMS only: "GSM-7" (160 a segment) or "UCS-2" (70)


def format_value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


class _Variables(Mapping[str, str]):
    """A template's variables, each formatted when a template asks for it (a message
    names a few of the 40-odd features): the customer's attributes, else the catalog's
    defaults, else the feature."""

    __slots__ = ("_attributes", "_defaults", "_features", "_positions")

    def __init__(
        self,
        positions: Mapping[str, int],
        features: np.ndarray,
        attributes: Mapping[str, str],
        defaults: Mapping[str, str],
    ) -> None:
        self._positions = positions
        self._features = features
        self._attributes = attributes
        self._defaults = defaults

    def __getitem__(self, name: str) -> str:
        value = self._attributes.get(name)
        if value:
            return value
        if name in self._defaults:
            return self._defaults[name]
        return format_value(float(self._features[self._positions[name]]))

    def _names(self) -> set[str]:
        attributes = {k for k, v in self._attributes.items() if v}
        return set(self._positions) | set(self._defaults) | attributes

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


@functools.cache
def _positions(names: tuple[str, ...]) -> dict[str, int]:
    return {n: i for i, n in enumerate(names)}


def template_variables(
    names: tuple[str, ...],
    features: np.ndarray,
    attributes: Mapping[str, str],
    defaults: Mapping[str, str],
) -> Mapping[str, str]:
    """Features (formatted for people), then defaults, then the customer's attributes."""
    return _Variables(_positions(names), features, attributes, defaults)


@functools.lru_cache(maxsize=4096)
def _template(text: str) -> Template:
    return Template(text)


def _fill(text: str, variables: Mapping[str, str]) -> str:
    return _template(text).safe_substitute(variables) if "$" in text else text


# The message fields each channel shows (the rest are never read for it).
CHANNEL_FIELDS = {
    "web": frozenset({"headline", "body", "call_to_action", "url"}),
    "mobile_app": frozenset({"headline", "body", "call_to_action", "url", "app_url"}),
    "email": frozenset(
        {"email_subject", "email_body", "headline", "body", "call_to_action", "url"}
    ),
    "sms": frozenset({"sms", "headline", "url"}),
    "call_center": frozenset({"headline", "body", "agent_script"}),
}


def variant(offer: Offer, channel: str, stage: str) -> str:
    """The stage whose copy this channel shows, or "default": a stage override that only
    touches other channels' fields leaves this channel on the default text."""
    override = offer.stage_messages.get(stage, {})
    return stage if CHANNEL_FIELDS[channel] & set(override) else "default"


def render(offer: Offer, channel: str, stage: str, variables: Mapping[str, str]) -> RenderedMessage:
    shown = CHANNEL_FIELDS[channel]
    f = {k: _fill(v, variables) for k, v in offer.message_for(stage).items() if k in shown}
    treatment = f"{offer.offer_id}/{channel}/{variant(offer, channel, stage)}"
    headline, body = f.get("headline", ""), f.get("body", "")
    cta, url = f.get("call_to_action", ""), f.get("url", "")
    if channel == "sms":
        text, encoding = sms.fit(f.get("sms") or " ".join(p for p in (headline, url) if p))
        return RenderedMessage(body=text, url=url, treatment_id=treatment, sms_encoding=encoding)
    if channel == "email":
        return RenderedMessage(
            headline=f.get("email_subject") or headline,
            body=f.get("email_body") or body,
            call_to_action=cta,
            url=url,
            treatment_id=treatment,
        )
    if channel == "call_center":
        return RenderedMessage(
            headline=headline,
            body=body,
            agent_script=f.get("agent_script") or body,
            treatment_id=treatment,
        )
    if channel == "mobile_app":
        url = f.get("app_url") or url
    return RenderedMessage(headline, body, cta, url, treatment_id=treatment)
