"""Server interceptors: map Arbiter errors to gRPC statuses in one place (unary and
bidirectional-streaming methods), and answer undecodable requests with INVALID_ARGUMENT
(decoding.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import grpc
from grpc import aio

from common.errors import ArbiterError, InvalidArgument
from common.logs import REQUEST_ID
from engine.api.decoding import DecodeFailures, Undecodable, tolerant
from engine.service import metrics

log = logging.getLogger(__name__)

# The stubs make the interceptor generic; the runtime class is not subscriptable.
if TYPE_CHECKING:
    _Interceptor = aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = aio.ServerInterceptor

Behavior = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]


@asynccontextmanager
async def _statuses(
    context: aio.ServicerContext[Any, Any], method: str, name: str
) -> AsyncIterator[None]:
    """Aborts the call with the status of an ArbiterError, or INTERNAL (details logged,
    never sent) for anything unexpected; times the call under the method's ``name`` and
    its status code (``arbiter_rpc_seconds``)."""
    started = time.perf_counter()
    code = "OK"
    try:
        yield
    except ArbiterError as exc:
        code = exc.status
        await context.abort(grpc.StatusCode[exc.status], str(exc))
    except aio.AbortError:
        code = _code(context)
        raise
    except asyncio.CancelledError:
        code = "CANCELLED"  # the caller went away, or its deadline passed
        raise
    except Exception:
        code = "INTERNAL"
        log.exception("%s failed", method)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
    finally:
        metrics.RPC_SECONDS.labels(name, code).observe(time.perf_counter() - started)


def _code(context: aio.ServicerContext[Any, Any]) -> str:
    """The status code a servicer aborted with."""
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


_REQUEST_ID_KEY = "x-request-id"
_REQUEST_ID_MAX = 128


def _request_id(context: aio.ServicerContext[Any, Any]) -> None:
    """The caller's ``x-request-id`` into the log lines of this call (bounded, printable:
    a log line is not a place for a caller's control characters)."""
    for key, value in context.invocation_metadata() or ():
        if key == _REQUEST_ID_KEY and isinstance(value, str):
            text = value[:_REQUEST_ID_MAX]
            if text.isprintable():
                REQUEST_ID.set(text)
            return


def _guard(behavior: Behavior, method: str) -> Behavior:
    name = method.rsplit("/", 1)[-1]  # "Decide": the metrics' label

    async def guarded(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        _request_id(context)
        async with _statuses(context, method, name):
            if isinstance(request, Undecodable):
                raise InvalidArgument("request", request.problem)
            return await behavior(request, context)

    return guarded


StreamBehavior = Callable[[AsyncIterator[Any], aio.ServicerContext[Any, Any]], AsyncIterator[Any]]


def _guard_stream(behavior: StreamBehavior, method: str) -> StreamBehavior:
    name = method.rsplit("/", 1)[-1]

    async def guarded(
        requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        _request_id(context)
        async with _statuses(context, method, name):
            async for response in behavior(requests, context):
                yield response

    return guarded


def _message_type(deserializer: Any) -> str:
    """``arbiter.v1.DecideRequest`` for ``DecideRequest.FromString``."""
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "the method's request message"))


class ErrorInterceptor(_Interceptor):
    """Turns ``ArbiterError`` into its status code and message; anything else into
    INTERNAL with the details logged, never leaked; undecodable requests into
    INVALID_ARGUMENT, counted in ``decode_failures``. Wrapped handlers are cached."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self.decode_failures = DecodeFailures()

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        method = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        deserializer = tolerant(
            handler.request_deserializer,
            _message_type(handler.request_deserializer),
            method,
            self.decode_failures,
        )
        if handler.unary_unary is not None:
            wrapped = grpc.unary_unary_rpc_method_handler(
                _guard(cast(Behavior, handler.unary_unary), method),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        elif handler.stream_stream is not None:
            wrapped = grpc.stream_stream_rpc_method_handler(
                _guard_stream(cast(StreamBehavior, handler.stream_stream), method),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        else:
            return handler
        self._handlers[method] = wrapped
        return wrapped
