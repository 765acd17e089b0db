"""When a decision's answer is final: each channel's reward window (the trainer and the
online learner read the same). A positive or terminal answer settles a decision at once;
without one, its channel's window passing means "no response"."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.vocabulary import CHANNELS

# Minutes a channel's decision waits for an answer before "no response" is its label:
# web and app answers come within the visit, an agent's within the call and its notes,
# an email's or an SMS's within days.
DEFAULT_REWARD_WINDOW_MINUTES: Mapping[str, float] = {
    "web": 30.0,
    "mobile_app": 30.0,
    "call_center": 60.0,
    "email": 3 * 1440.0,
    "sms": 2 * 1440.0,
}


@dataclass(frozen=True)
class RewardWindows:
    """Seconds each channel's decisions wait for an answer; ``attribution`` (seconds) is
    how late an answer still counts for its decision, at least the longest window."""

    seconds: Mapping[str, float]
    attribution: float

    @classmethod
    def of(cls, minutes: Mapping[str, float], attribution_hours: float) -> RewardWindows:
        unknown = sorted(set(minutes) - set(CHANNELS))
        if unknown:
            raise ValueError(
                f"reward_window_minutes: unknown channel {', '.join(unknown)}"
                f" (known: {', '.join(CHANNELS)})"
            )
        seconds = {c: 60.0 * minutes.get(c, DEFAULT_REWARD_WINDOW_MINUTES[c]) for c in CHANNELS}
        return cls(seconds, max(attribution_hours * 3600.0, *seconds.values()))

    @classmethod
    def uniform(cls, seconds: float) -> RewardWindows:
        """Every channel waits ``seconds``, and answers count within them."""
        return cls(dict.fromkeys(CHANNELS, seconds), seconds)

    def wait(self, channel: str) -> float:
        return self.seconds.get(channel, self.attribution)
