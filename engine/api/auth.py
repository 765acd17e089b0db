"""API keys with roles, checked on every call by an interceptor.

``ARBITER_API_KEYS_FILE`` is TOML::

    [[key]]
    id = "web-frontend"            # shown in logs, never the secret
    sha256 = "<hex sha256 of the secret>"
    roles = ["decide"]
    rate_per_second = 500          # optional

Callers send ``authorization: Bearer <secret>``. No or unknown key: UNAUTHENTICATED; a
key without the method's role: PERMISSION_DENIED; over its rate: RESOURCE_EXHAUSTED.
Health and reflection need no key. The secret's hash is compared with every key's in
constant time. The file is re-read when it changes (checked at most once a second); a
file that cannot be used is refused, logged once, and the keys before it stay.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
import tomllib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

from common.errors import ConfigurationError

log = logging.getLogger(__name__)

ROLES = ("decide", "profile:read", "events:write", "admin")
# The role each method needs; "admin" may call everything. Methods not listed (health,
# reflection) are open.
METHOD_ROLES: Mapping[str, str] = {
    "/arbiter.v1.DecisionService/Decide": "decide",
    "/arbiter.v1.DecisionService/DecideBatch": "decide",
    "/arbiter.v1.DecisionService/ReportOutcome": "decide",
    "/arbiter.v1.ProfileService/GetProfile": "profile:read",
    "/arbiter.v1.ProfileService/RecordEvent": "events:write",
}
ADMIN_PREFIXES = ("/arbiter.",)  # any other method of ours is administrative


@dataclass
class ApiKey:
    id: str
    sha256: bytes
    roles: frozenset[str]
    rate_per_second: float | None = None
    _tokens: float = 0.0
    _stamp: float = 0.0

    def allows(self, role: str) -> bool:
        return "admin" in self.roles or role in self.roles

    def take(self, now: float) -> bool:
        """One call from a token bucket holding a second's worth of the rate."""
        if self.rate_per_second is None:
            return True
        capacity = max(self.rate_per_second, 1.0)
        self._tokens = min(capacity, self._tokens + (now - self._stamp) * self.rate_per_second)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def parse_keys(text: str, where: str) -> list[ApiKey]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{where}: {exc}") from exc
    keys, ids = [], set()
    for n, raw in enumerate(doc.get("key", []), start=1):
        at = f"{where}: key {n}"
        try:
            key_id, digest, roles = str(raw["id"]), bytes.fromhex(raw["sha256"]), raw["roles"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"{at}: needs id, sha256 (hex) and roles") from exc
        unknown = set(roles) - set(ROLES)
        if len(digest) != 32 or unknown or not roles or key_id in ids:
            raise ConfigurationError(
                f"{at} ({key_id}): sha256 is 64 hex digits, roles among {list(ROLES)}, ids unique"
            )
        rate = raw.get("rate_per_second")
        if rate is not None and (not isinstance(rate, int | float) or rate <= 0):
            raise ConfigurationError(f"{at} ({key_id}): rate_per_second must be positive")
        ids.add(key_id)
        keys.append(ApiKey(key_id, digest, frozenset(roles), rate, float(rate or 0), 0.0))
    return keys


def load_keys(path: Path) -> list[ApiKey]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read API keys {path}: {exc.strerror}") from exc
    return parse_keys(text, str(path))


class KeyRing:
    """The keys of a file, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._keys = load_keys(path)
        self._seen = self._signature()
        self._checked = time.monotonic()

    def _signature(self) -> tuple[float, int]:
        try:
            stat = self._path.stat()
        except OSError:
            return (0.0, -1)
        return (stat.st_mtime, stat.st_size)

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < 1.0:
            return
        self._checked = now
        signature = self._signature()
        if signature == self._seen:
            return
        self._seen = signature
        try:
            keys = load_keys(self._path)
        except ConfigurationError as exc:
            log.error("API keys not reloaded, the previous keys stay: %s", exc)
            return
        self._keys = keys
        log.info("API keys reloaded: %d keys", len(keys))

    def find(self, secret: str) -> ApiKey | None:
        self._refresh()
        digest = hashlib.sha256(secret.encode()).digest()
        found = None
        for key in self._keys:  # every key, in constant time each
            if hmac.compare_digest(digest, key.sha256):
                found = key
        return found


def _bearer(metadata: Any) -> str | None:
    for name, value in metadata or ():
        if name == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return None


# The stubs make these generic; the runtime classes are not subscriptable.
if TYPE_CHECKING:
    _Interceptor = aio.ServerInterceptor[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _Interceptor = aio.ServerInterceptor


def _refusing(handler: Handler, code: grpc.StatusCode, message: str) -> Handler:
    """A handler of the same kind that answers ``code`` without running the method."""

    async def unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)

    async def stream(requests: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        unary,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class AuthInterceptor(_Interceptor):
    """Checks the caller's key and its role for the method, and its rate."""

    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method = handler_call_details.method
        role = METHOD_ROLES.get(method)
        if role is None and method.startswith(ADMIN_PREFIXES):
            role = "admin"
        handler = await continuation(handler_call_details)
        if role is None or handler is None:
            return handler  # health, reflection
        secret = _bearer(handler_call_details.invocation_metadata)
        key = self._keys.find(secret) if secret else None
        if key is None:
            return _refusing(
                handler,
                grpc.StatusCode.UNAUTHENTICATED,
                "authorization: send `authorization: Bearer <key>` with a valid key",
            )
        if not key.allows(role):
            return _refusing(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                f"key {key.id} lacks the role {role!r} this method needs",
            )
        if not key.take(time.monotonic()):
            return _refusing(
                handler,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"key {key.id} is over its rate of {key.rate_per_second:g} calls per second",
            )
        return handler


def new_key(key_id: str, roles: list[str]) -> tuple[str, str]:
    """A new secret and the TOML entry to paste into the keys file."""
    unknown = set(roles) - set(ROLES)
    if unknown or not roles:
        raise ConfigurationError(f"roles: among {list(ROLES)}, got {roles}")
    secret = "arb_" + secrets.token_urlsafe(32)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    entry = (
        f'[[key]]\nid = "{key_id}"\nsha256 = "{digest}"\n'
        f"roles = [{', '.join(repr(r).replace(chr(39), chr(34)) for r in roles)}]\n"
    )
    return secret, entry
