"""The gRPC channel every client of ours opens (here, at the edge, because the test and
simulation harness in server.py opens one too): TLS when a CA is given (with a client
certificate for mTLS), and the API key on every call as ``authorization: Bearer``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import grpc

from common.errors import ConfigurationError
from engine.settings import ClientSettings


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: Any


# The stubs make the interceptors generic; the runtime classes are not subscriptable.
if TYPE_CHECKING:
    _UnaryUnary = grpc.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.UnaryStreamClientInterceptor[Any, Any]
    _StreamUnary = grpc.StreamUnaryClientInterceptor[Any, Any]
    _StreamStream = grpc.StreamStreamClientInterceptor[Any, Any]
else:
    _UnaryUnary = grpc.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.UnaryStreamClientInterceptor
    _StreamUnary = grpc.StreamUnaryClientInterceptor
    _StreamStream = grpc.StreamStreamClientInterceptor


class _Bearer(_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream):
    """Adds the API key to every call's metadata."""

    def __init__(self, key: str) -> None:
        self._header = ("authorization", f"Bearer {key}")

    def _with_key(self, details: Any) -> _Details:
        metadata = [*(details.metadata or ()), self._header]
        return _Details(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._with_key(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._with_key(details), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: Any, requests: Iterator[Any]
    ) -> Any:
        return continuation(self._with_key(details), requests)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: Any, requests: Iterator[Any]
    ) -> Any:
        return continuation(self._with_key(details), requests)


def _read(path: Any, what: str) -> bytes:
    try:
        return bytes(path.read_bytes())
    except OSError as exc:
        raise ConfigurationError(f"cannot read the {what} {path}: {exc.strerror}") from exc


def open_channel(settings: ClientSettings, target: str | None = None) -> grpc.Channel:
    """A channel to ``target`` (default: the settings' target)."""
    address = target or settings.target
    if settings.tls_ca_file is None:
        channel = grpc.insecure_channel(address)
    else:
        key = cert = None
        if settings.client_cert_file and settings.client_key_file:
            cert = _read(settings.client_cert_file, "client certificate")
            key = _read(settings.client_key_file, "client key")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(settings.tls_ca_file, "CA certificate"),
            private_key=key,
            certificate_chain=cert,
        )
        channel = grpc.secure_channel(address, credentials)
    if settings.api_key:
        channel = grpc.intercept_channel(channel, _Bearer(settings.api_key))
    return channel
