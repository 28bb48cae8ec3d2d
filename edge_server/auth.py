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
from splitnet_proto.messages import AUTH_METADATA

OPEN_METHODS_PREFIX = "/grpc.health.v1.Health/"


def presented_token(metadata: Any) -> str:
    """The bearer token in call metadata, or ''."""
    value = dict(metadata or ()).get(AUTH_METADATA, "")
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return value[len("Bearer "):] if value.startswith("Bearer ") else ""


class Identities:
    """Who a call is, for the per-device share of the queue: what the edge authenticated,
    never what the device says of itself.

        mutual TLS     ─► "cert:<subject common name>"
        device token   ─► "token:<its name>" (a token file of NAME TOKEN lines)
        otherwise      ─► "peer:<address without port>" (a shared token, or none: devices
                          behind one address share one share; give them their own tokens)
    """

    def __init__(self, device_tokens: dict[str, str] | None = None) -> None:
        self.device_tokens = dict(device_tokens or {})

    def of(self, context: grpc.aio.ServicerContext) -> str:
        auth = context.auth_context() or {}
        names = auth.get("x509_common_name") or auth.get("x509_subject")
        if names:
            name = names[0]
            return "cert:" + (name.decode(errors="replace") if isinstance(name, bytes)
                              else str(name))
        if self.device_tokens:
            name = self.device_tokens.get(presented_token(context.invocation_metadata()))
            if name is not None:
                return f"token:{name}"
        peer = context.peer() or ""
        return "peer:" + (peer.rpartition(":")[0] or peer)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without ``authorization: Bearer <token>`` naming the shared token or
    one of the devices' tokens (compared in constant time)."""

    def __init__(self, token: str | None, device_tokens: dict[str, str] | None = None) -> None:
        self._expected = [f"Bearer {t}".encode()
                          for t in ([token] if token else []) + list(device_tokens or {})]
        if not self._expected:
            raise ValueError("a token interceptor needs a token")

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
        # every token compared, so the time taken does not say which one nearly matched
        matched = [hmac.compare_digest(presented, expected) for expected in self._expected]
        if any(matched):
            return handler
        reason = ("missing token: pass 'authorization: Bearer <token>' metadata (on the "
                  "device: --token-file FILE or $SPLITNET_TOKEN)" if not presented
                  else "wrong token")
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
