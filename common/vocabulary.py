"""The closed vocabularies of the contract, as the core spells them.

Each tuple is in proto enum order: the proto number of ``CHANNELS[i]`` is ``i + 1``
(tests/test_vocabulary.py pins that against the generated protos). The core uses these
lower-case names; engine/api/proto.py turns them into proto enum values and back.
"""

from __future__ import annotations

CHANNELS = ("web", "mobile_app", "call_center", "email", "sms")
STAGES = ("consideration", "evaluation", "purchase", "post_purchase", "at_risk")
OUTCOMES = ("impression", "click", "accept", "decline", "convert", "dismiss")
# The customer took the offer: a reward for training, a suppression for the contact policy.
POSITIVE_OUTCOMES = frozenset({"accept", "convert"})
# The customer answered for good: a decision's training label need not wait any longer.
TERMINAL_OUTCOMES = POSITIVE_OUTCOMES | {"decline", "dismiss"}

CHANNEL_CODE = {name: i + 1 for i, name in enumerate(CHANNELS)}
STAGE_CODE = {name: i + 1 for i, name in enumerate(STAGES)}
