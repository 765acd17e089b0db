"""Rendering: the offer's treatment for the channel and life-cycle stage.

Templates use ``$name`` placeholders (``string.Template``): substitution only, no
attribute access or code, and unknown placeholders are left as written. Channel rules:
web and app show headline, body, call to action and a link (the app prefers a deep
link); email's headline is the subject; SMS is one body of at most 160 characters; the
call center gets an agent script with headline and body as a summary.
"""

from __future__ import annotations

from collections.abc import Mapping
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


def template_variables(
    names: tuple[str, ...],
    features: np.ndarray,
    attributes: Mapping[str, str],
    defaults: Mapping[str, str],
) -> dict[str, str]:
    """Features (formatted for people), then defaults, then the customer's attributes."""
    variables = {n: format_value(v) for n, v in zip(names, features.tolist(), strict=True)}
    variables.update(defaults)
    variables.update({k: v for k, v in attributes.items() if v})
    return variables


def _fill(text: str, variables: Mapping[str, str]) -> str:
    return Template(text).safe_substitute(variables) if "$" in text else text


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
    fields = offer.message_for(stage)
    f = {k: _fill(v, variables) for k, v in fields.items()}
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
