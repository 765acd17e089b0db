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

from engine.core.catalog import SMS_MAX, Offer


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    headline: str = ""
    body: str = ""
    call_to_action: str = ""
    url: str = ""
    agent_script: str = ""
    treatment_id: str = ""


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


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def render(offer: Offer, channel: str, stage: str, variables: Mapping[str, str]) -> RenderedMessage:
    fields = offer.message_for(stage)
    f = {k: _fill(v, variables) for k, v in fields.items()}
    treatment = (
        f"{offer.offer_id}/{channel}/{stage if stage in offer.stage_messages else 'default'}"
    )
    headline, body = f.get("headline", ""), f.get("body", "")
    cta, url = f.get("call_to_action", ""), f.get("url", "")
    if channel == "sms":
        text = f.get("sms") or " ".join(p for p in (headline, url) if p)
        return RenderedMessage(body=_shorten(text, SMS_MAX), url=url, treatment_id=treatment)
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
