"""Channels for calling other services: every call carries the current request id (and, from
the identity issue on, the caller's credentials), so one id follows a request across the mesh."""

from __future__ import annotations

import grpc

from clinic_platform.context import current_request_id
from clinic_platform.interceptors import REQUEST_ID_HEADER


class _PropagateRequestId(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        request_id = current_request_id()
        if request_id:
            metadata = [*(client_call_details.metadata or ()), (REQUEST_ID_HEADER, request_id)]
            client_call_details = client_call_details._replace(metadata=metadata)
        return await continuation(client_call_details, request)


def channel(target: str, *, interceptors: list[grpc.aio.ClientInterceptor] | None = None) -> grpc.aio.Channel:
    """An aio channel to another service (plaintext inside the mesh; mTLS is the platform's job)."""
    return grpc.aio.insecure_channel(target, interceptors=[_PropagateRequestId(), *(interceptors or [])])
