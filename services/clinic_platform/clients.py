"""Channels for calling other services. Every call carries the current request id, so one id
follows a request across the mesh, and the caller's access token, so the called service knows
on whose behalf it acts and checks that token again (docs/security.md)."""

from __future__ import annotations

import grpc

from clinic_platform.auth import caller_var
from clinic_platform.context import current_request_id
from clinic_platform.interceptors import REQUEST_ID_HEADER


class _PropagateContext(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        metadata = list(client_call_details.metadata or ())
        request_id = current_request_id()
        if request_id:
            metadata.append((REQUEST_ID_HEADER, request_id))
        caller = caller_var.get()
        if caller is not None and not any(key == "authorization" for key, _ in metadata):
            metadata.append(("authorization", f"Bearer {caller.token}"))
        return await continuation(client_call_details._replace(metadata=metadata), request)


def channel(target: str, *, interceptors: list[grpc.aio.ClientInterceptor] | None = None) -> grpc.aio.Channel:
    """An aio channel to another service (plaintext inside the mesh; mTLS is the platform's job)."""
    return grpc.aio.insecure_channel(target, interceptors=[_PropagateContext(), *(interceptors or [])])
