"""Server interceptors: map Arbiter errors to gRPC statuses in one place (unary and
bidirectional-streaming methods)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import grpc
from grpc import aio

from common.errors import ArbiterError

log = logging.getLogger(__name__)

# The stubs make the interceptor generic; the runtime class is not subscriptable.
if TYPE_CHECKING:
    _Interceptor = aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = aio.ServerInterceptor

Behavior = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]


@asynccontextmanager
async def _statuses(context: aio.ServicerContext[Any, Any], method: str) -> AsyncIterator[None]:
    """Aborts the call with the status of an ArbiterError, or INTERNAL (details logged,
    never sent) for anything unexpected."""
    try:
        yield
    except ArbiterError as exc:
        await context.abort(grpc.StatusCode[exc.status], str(exc))
    except aio.AbortError:
        raise
    except Exception:
        log.exception("%s failed", method)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")


def _guard(behavior: Behavior, method: str) -> Behavior:
    async def guarded(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        async with _statuses(context, method):
            return await behavior(request, context)

    return guarded


StreamBehavior = Callable[[AsyncIterator[Any], aio.ServicerContext[Any, Any]], AsyncIterator[Any]]


def _guard_stream(behavior: StreamBehavior, method: str) -> StreamBehavior:
    async def guarded(
        requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        async with _statuses(context, method):
            async for response in behavior(requests, context):
                yield response

    return guarded


class ErrorInterceptor(_Interceptor):
    """Turns ``ArbiterError`` into its status code and message; anything else into
    INTERNAL with the details logged, never leaked. Wrapped handlers are cached."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

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
        if handler.unary_unary is not None:
            wrapped = grpc.unary_unary_rpc_method_handler(
                _guard(cast(Behavior, handler.unary_unary), method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        elif handler.stream_stream is not None:
            wrapped = grpc.stream_stream_rpc_method_handler(
                _guard_stream(cast(StreamBehavior, handler.stream_stream), method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        else:
            return handler
        self._handlers[method] = wrapped
        return wrapped
