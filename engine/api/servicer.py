"""gRPC servicers: decode and validate the request, call the service, encode the answer.

Below this edge nothing sees a protobuf message: the service and the core take and return
plain dataclasses. (The clients in engine/clients build their own requests.)
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from arbiter.v1 import decision_pb2, decision_pb2_grpc, profile_pb2, profile_pb2_grpc
from common.errors import ArbiterError, InvalidArgument
from engine.api import proto, validation
from engine.api.decoding import Undecodable
from engine.core.contact_views import CapUse
from engine.core.decision import Decision, DecisionRequest
from engine.service.application import Application
from engine.service.metrics import MetricsTimer
from engine.service.profile import Profile
from feature_store.store import EventRecord, OutcomeRecord

Context = aio.ServicerContext[Any, Any]


IDEMPOTENCY_METADATA = "idempotency-key"


def _metadata(context: Context, name: str) -> str:
    """The value of the call's metadata ``name`` ("" when absent)."""
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else ""
    return ""


def _seconds(ts: Timestamp, present: bool, field: str = "occurred_at") -> float | None:
    """Unix seconds of a set Timestamp (None when unset); nanos out of 0..999,999,999 are
    refused, as protobuf's own Timestamp rules say."""
    if not present:
        return None
    if not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidArgument(field, f"nanos {ts.nanos} outside 0..999,999,999")
    return ts.seconds + ts.nanos / 1e9


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def decode_decide(request: decision_pb2.DecideRequest) -> DecisionRequest:
    return DecisionRequest(
        customer_id=validation.customer_id(request.customer_id),
        channel=validation.channel(request.channel),
        placement=validation.short_text(request.placement, "placement", limit=64),
        context=validation.context(request.context),
        limit=validation.limit(request.limit),
        offer_ids=validation.offer_ids(request.offer_ids),
        request_id=validation.short_text(request.request_id, "request_id"),
        explain=request.explain,
    )


def encode_decision(decision: Decision, explain: bool = False) -> decision_pb2.DecideResponse:
    response = decision_pb2.DecideResponse(
        decision_id=decision.decision_id,
        customer_id=decision.customer_id,
        lifecycle_stage=proto.stage(decision.stage),
        model_version=decision.model_version,
        degraded=decision.degraded,
        degraded_reason=decision.degraded_reason,
        known_customer=decision.known_customer,
    )
    if explain:
        response.excluded.extend(
            decision_pb2.Exclusion(offer_id=o, reason=r) for o, r in decision.excluded.items()
        )
    for a in decision.actions:
        m = a.message
        response.actions.append(
            decision_pb2.Action(
                offer_id=a.offer_id,
                rank=a.rank,
                message=decision_pb2.Message(
                    headline=m.headline,
                    body=m.body,
                    call_to_action=m.call_to_action,
                    url=m.url,
                    agent_script=m.agent_script,
                    treatment_id=m.treatment_id,
                    sms_encoding=m.sms_encoding,
                ),
                propensity=a.propensity,
                value=a.value,
                priority=a.priority,
                probability=a.probability,
                reasons=[
                    decision_pb2.Reason(
                        code=r.code, feature=r.feature, contribution=r.contribution, text=r.text
                    )
                    for r in a.reasons  # always: stage, rules, caps, priority terms
                ],
            )
        )
    return response


BATCH_CHUNK = 64  # decisions of one DecideBatch stream in flight at once


class DecisionServicer(decision_pb2_grpc.DecisionServiceServicer):
    def __init__(self, application: Application) -> None:
        self.application = application

    async def DecideBatch(
        self,
        request_iterator: AsyncIterator[decision_pb2.DecideBatchRequest],
        context: Context,
    ) -> AsyncIterator[decision_pb2.DecideBatchResponse]:
        """Decides chunk by chunk (one pipelined read per chunk), answering in order."""
        chunk: list[decision_pb2.DecideRequest | Undecodable] = []
        async for item in request_iterator:
            chunk.append(item if isinstance(item, Undecodable) else item.request)
            if len(chunk) == BATCH_CHUNK:
                for response in await self._decide_chunk(chunk):
                    yield response
                chunk = []
        for response in await self._decide_chunk(chunk):
            yield response

    async def _decide_chunk(
        self, chunk: list[decision_pb2.DecideRequest | Undecodable]
    ) -> list[decision_pb2.DecideBatchResponse]:
        """Answers in order; an undecodable or invalid request gets its error in place."""
        answers = []
        valid: list[tuple[int, DecisionRequest]] = []
        for i, request in enumerate(chunk):
            if isinstance(request, Undecodable):
                answer = decision_pb2.DecideBatchResponse()
                answer.error.code = "INVALID_ARGUMENT"
                answer.error.message = f"request: {request.problem}"
                answers.append(answer)
                continue
            answers.append(
                decision_pb2.DecideBatchResponse(
                    customer_id=request.customer_id, request_id=request.request_id
                )
            )
            try:
                valid.append((i, decode_decide(request)))
            except ArbiterError as exc:
                answers[i].error.code = exc.status
                answers[i].error.message = str(exc)
        if valid:
            decisions = await self.application.decide_many([d for _, d in valid])
            for (i, decoded), decision in zip(valid, decisions, strict=True):
                answers[i].response.CopyFrom(encode_decision(decision, decoded.explain))
        return answers

    async def Decide(
        self, request: decision_pb2.DecideRequest, context: Context
    ) -> decision_pb2.DecideResponse:
        decoded = decode_decide(request)
        remaining = context.time_remaining()  # the caller's deadline, if it set one
        deadline = None if remaining is None else time.monotonic() + remaining
        # The stages into arbiter_stage_seconds (a few microseconds a call).
        decision = await self.application.decide(decoded, MetricsTimer(), deadline=deadline)
        return encode_decision(decision, decoded.explain)

    async def ReportOutcome(
        self, request: decision_pb2.ReportOutcomeRequest, context: Context
    ) -> decision_pb2.ReportOutcomeResponse:
        now = time.time()
        decision_id = validation.short_text(request.decision_id, "decision_id", required=True)
        offer_id = validation.short_text(request.offer_id, "offer_id", required=True)
        outcome = validation.outcome(request.outcome)
        key = validation.short_text(request.idempotency_key, "idempotency_key")
        record = OutcomeRecord(
            customer_id=validation.customer_id(request.customer_id),
            decision_id=decision_id,
            offer_id=offer_id,
            outcome=outcome,
            value=validation.outcome_value(request.value),
            occurred_at=validation.occurred_at(
                _seconds(request.occurred_at, request.HasField("occurred_at")), now
            ),
            idempotency_key=key or f"{decision_id}:{offer_id}:{outcome}",
            reported_by=validation.short_text(request.reported_by, "reported_by"),
        )
        recorded, outcome_id = await self.application.report_outcome(record)
        return decision_pb2.ReportOutcomeResponse(recorded=recorded, outcome_id=outcome_id)


def _cap(use: CapUse) -> profile_pb2.CapUse:
    return profile_pb2.CapUse(
        channel=use.channel, used=use.used, max=use.max, window=use.window, budget=use.budget
    )


def encode_profile(
    profile: Profile, names: Mapping[str, str] | None = None
) -> profile_pb2.GetProfileResponse:
    """``names``: offer id -> name, for the agent's eyes."""
    names = names or {}
    response = profile_pb2.GetProfileResponse(
        customer_id=profile.customer_id,
        lifecycle_stage=proto.stage(profile.stage),
        lifecycle_reason=profile.stage_reason,
        features=profile.features,
        attributes=profile.attributes,
        known=profile.known,
    )
    for e in profile.events:
        response.recent_events.append(
            profile_pb2.Event(
                channel=proto.channel_or_unspecified(e["channel"]),
                event_type=e["event_type"],
                attributes={str(k): str(v) for k, v in e.get("attributes", {}).items()},
                occurred_at=_timestamp(e["occurred_at"]),
            )
        )
    for d in profile.decisions:
        response.recent_decisions.append(
            profile_pb2.DecisionSummary(
                decision_id=d.decision_id,
                offer_id=d.offer_id,
                channel=proto.channel_or_unspecified(d.channel),
                placement=d.placement,
                rank=d.rank,
                decided_at=_timestamp(d.decided_at),
                outcomes=[proto.outcome(o) for o in d.outcomes],
                offer_name=names.get(d.offer_id, d.offer_id),
            )
        )
    for s in profile.contact_state:
        state = response.contact_state.add(
            offer_id=s.offer_id,
            offer_name=names.get(s.offer_id, s.offer_id),
            caps=[_cap(c) for c in s.caps],
        )
        if s.cooldown_until:
            state.cooldown_until.CopyFrom(_timestamp(s.cooldown_until))
            state.cooldown_days_left = round((s.cooldown_until - time.time()) / 86400, 1)
        if s.suppressed_since:
            state.suppressed_since.CopyFrom(_timestamp(s.suppressed_since))
    response.channel_caps.extend(_cap(c) for c in profile.channel_caps)
    for c in profile.consent:
        view = response.consent.add(channel=c.channel, given=c.given, source=c.source)
        if c.at:
            view.at.CopyFrom(_timestamp(c.at))
            view.via = proto.channel_or_unspecified(c.via)
    for step in profile.stage_transitions:
        response.stage_transitions.add(
            from_stage=proto.stage(step.from_stage),
            to_stage=proto.stage(step.to_stage),
            at=_timestamp(step.at),
            reason=step.reason,
        )
    for waiting in profile.pending_triggers:
        response.pending_triggers.add(
            trigger_id=waiting.trigger_id,
            event_type=waiting.event_type,
            scheduled_at=_timestamp(waiting.scheduled_at),
            due=_timestamp(waiting.due),
        )
    return response


class ProfileServicer(profile_pb2_grpc.ProfileServiceServicer):
    def __init__(self, application: Application) -> None:
        self.application = application

    async def GetProfile(
        self, request: profile_pb2.GetProfileRequest, context: Context
    ) -> profile_pb2.GetProfileResponse:
        profile = await self.application.profile(validation.customer_id(request.customer_id))
        names = {o.offer_id: o.name for o in self.application.core.catalog.offers}
        return encode_profile(profile, names)

    async def RecordEvent(
        self, request: profile_pb2.RecordEventRequest, context: Context
    ) -> profile_pb2.RecordEventResponse:
        now = time.time()
        event = EventRecord(
            customer_id=validation.customer_id(request.customer_id),
            channel=validation.channel(request.channel),
            event_type=validation.event_type(request.event_type),
            attributes=validation.string_map(request.attributes, "attributes"),
            occurred_at=validation.occurred_at(
                _seconds(request.occurred_at, request.HasField("occurred_at")), now
            ),
            # Optional, in the call's metadata (the message has no field for it): the same
            # key again is the same event, recorded once.
            idempotency_key=validation.short_text(
                _metadata(context, IDEMPOTENCY_METADATA), f"metadata {IDEMPOTENCY_METADATA}"
            ),
        )
        validation.consent_event(event.event_type, event.attributes)
        await self.application.record_event(event)
        return profile_pb2.RecordEventResponse()

    async def ForgetCustomer(
        self, request: profile_pb2.ForgetCustomerRequest, context: Context
    ) -> profile_pb2.ForgetCustomerResponse:
        forgotten = await self.application.forget(validation.customer_id(request.customer_id))
        return profile_pb2.ForgetCustomerResponse(
            removed=forgotten.removed,
            idempotency_keys=forgotten.idempotency_keys,
            decision_log_entries=forgotten.decision_log_entries,
            outcome_log_entries=forgotten.outcome_log_entries,
        )
