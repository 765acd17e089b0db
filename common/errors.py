"""Arbiter's errors. Each class names the gRPC status a client sees for it.

    ArbiterError                      INTERNAL (never raised bare)
    ├── InvalidArgument               INVALID_ARGUMENT, names the field
    ├── NotFound                      NOT_FOUND
    ├── FailedPrecondition            FAILED_PRECONDITION
    │   └── ProfileSchemaMismatch     a stored profile written with another feature schema
    ├── RateLimited                   RESOURCE_EXHAUSTED (slow down)
    ├── Unavailable                   UNAVAILABLE (retry later)
    │   └── FeatureStoreUnavailable   Redis down, slow or failing
    └── ConfigurationError            INTERNAL; raised at start-up, never per request
        └── ArtifactMismatch          a model artifact that does not fit the feature schema

The status is a name (``grpc.StatusCode[...]``), not the enum itself, so that nothing
below the gRPC edge imports grpc; engine/api/interceptor.py maps it. Library errors
(redis, lightgbm) are translated where they are caught, with ``raise ... from exc``, so
the decision core never sees them.
"""

from __future__ import annotations


class ArbiterError(Exception):
    """Base class; ``status`` is the name of the gRPC status the service answers with."""

    status: str = "INTERNAL"


class InvalidArgument(ArbiterError):
    """A request field is missing, malformed or out of range."""

    status = "INVALID_ARGUMENT"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(ArbiterError):
    status = "NOT_FOUND"


class FailedPrecondition(ArbiterError):
    status = "FAILED_PRECONDITION"


class ProfileSchemaMismatch(FailedPrecondition):
    """The stored profile was written with another batch schema: reload profiles."""


class RateLimited(ArbiterError):
    """The caller, or the customer it writes for, is over its rate."""

    status = "RESOURCE_EXHAUSTED"


class Unavailable(ArbiterError):
    status = "UNAVAILABLE"


class FeatureStoreUnavailable(Unavailable):
    """The online feature store did not answer in time or failed; ``timed_out``: it did
    not answer in time (a slow store, or a stall of our own), rather than refused.
    ``detail``: what went wrong, in Redis's words and with its address: for the log
    only, never for a caller."""

    def __init__(self, message: str, *, timed_out: bool = False, detail: str = "") -> None:
        super().__init__(message)
        self.timed_out = timed_out
        self.detail = detail


class ConfigurationError(ArbiterError):
    """The catalog, rules, schema or model cannot be used; found at start-up."""


class ArtifactMismatch(ConfigurationError):
    """A model artifact was trained on features other than the schema's."""
