"""Bearer-token authentication, checked in a server interceptor before any handler runs.

    metadata "authorization: Bearer <token>" ──► interceptor ──ok──► handler
                                                     └──wrong or missing──► UNAUTHENTICATED

The standard health service is left open, so stock probes (Kubernetes, grpc_health_probe)
work without the token.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from splitnet.messages import AUTH_METADATA

OPEN_METHODS_PREFIX = "/grpc.health.v1.Health/"


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without ``authorization: Bearer <token>`` (compared in constant time)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method.startswith(OPEN_METHODS_PREFIX):
            return await continuation(handler_call_details)
        presented = dict(handler_call_details.invocation_metadata or ()).get(AUTH_METADATA, "")
        if isinstance(presented, str):
            presented = presented.encode()
        handler = await continuation(handler_call_details)
        if hmac.compare_digest(presented, self._expected):
            return handler
        reason = ("missing token: pass 'authorization: Bearer <token>' metadata "
                  "(device_client --token)" if not presented else "wrong token")
        return _denying_handler(handler, reason)


def _denying_handler(handler: grpc.RpcMethodHandler | None,
                     message: str) -> grpc.RpcMethodHandler:
    async def abort(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler is not None and handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler is not None and handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler is not None and handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)
