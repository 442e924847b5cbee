"""The server interceptor every service runs: request id, access log, error mapping (and, from
the identity issue on, authentication), request validation in one wrapper, so the hot path pays for
one layer.

Order per call: parse the request (bytes that are not a valid message, e.g. a string that is not
UTF-8, are INVALID_ARGUMENT naming the field), the pre-call hooks (authentication, role gates),
then `clinic_platform.validation` (INVALID_ARGUMENT with a BadRequest per field), then the handler.

No exception reaches a client as UNKNOWN with a traceback: ServiceErrors become their status with
the message (and google.rpc details), a database or cache that is down becomes UNAVAILABLE, and
anything else becomes INTERNAL with the request id to quote, logged here with its traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from clinic_platform.context import new_request_id, request_id_var
from clinic_platform.db import is_connection_error
from clinic_platform.errors import InvalidArgument, ServiceError
from clinic_platform.validation import bad_utf8_field, violations

log = logging.getLogger("clinic.access")
error_log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
HEALTH_PREFIX = "/grpc.health.v1.Health/"  # probes every few seconds: not worth an access-log line
# A status message or field description is cut to this: a client's megabyte-long id echoed in a
# trailer would exceed the peer's header limit and reset the whole HTTP/2 connection.
MAX_MESSAGE_CHARS = 500

# Hooks run before the handler with the method and the call's metadata; they may raise
# ServiceError (e.g. Unauthenticated) and may set context variables (e.g. the caller).
PreCall = Callable[[str, dict[str, str]], Awaitable[None]]


def _is_unavailable(exc: BaseException) -> bool:
    if is_connection_error(exc):
        return True
    module = type(exc).__module__
    return module.startswith("redis") and "Connection" in type(exc).__name__


def status_of(err: ServiceError) -> tuple[grpc.StatusCode, tuple[tuple[str, bytes], ...]]:
    """The status code and the `grpc-status-details-bin` trailer for a ServiceError."""
    code = grpc.StatusCode[err.status]
    status = status_pb2.Status(code=code.value[0], message=_cut(err.message))
    if isinstance(err, InvalidArgument):
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=_cut(v.field), description=_cut(v.description)
                    )
                    for v in err.violations
                ]
            )
        )
        status.details.append(detail)
    return code, ((STATUS_DETAILS_KEY, status.SerializeToString()),)


# Refusals that are ordinary answers under contention (a slot taken, a state moved on): a storm
# of them is not worth a line each. Every other failure is logged, refused tokens included.
EXPECTED_REFUSALS = frozenset({grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION})


def _cut(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def _parse(parse: Callable[[bytes], Any], data: bytes) -> Any:
    try:
        return parse(data)
    except DecodeError:
        message_type = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
        field = bad_utf8_field(message_type, data) if message_type is not None else None
        if field:
            raise InvalidArgument(field, "is not valid UTF-8") from None
        raise InvalidArgument("request", "is not a valid protobuf message") from None


class ServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self, *, log_access: str = "slow", slow_ms: float = 250.0, pre_call: list[PreCall] | None = None
    ) -> None:
        self.log_all = log_access == "all"
        self.log_some = log_access in ("all", "slow")
        self.slow_ms = slow_ms
        self.pre_call = pre_call or []

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # streams (health Watch, reflection) pass through untouched
        method = handler_call_details.method
        metadata = dict(handler_call_details.invocation_metadata or ())
        # The request arrives as bytes and is parsed in the wrapper: gRPC's own parsing failure
        # would be an UNKNOWN naming a Python exception class.
        return grpc.unary_unary_rpc_method_handler(
            self._wrap(method, metadata, handler.unary_unary, handler.request_deserializer),
            request_deserializer=None,
            response_serializer=handler.response_serializer,
        )

    def _wrap(
        self,
        method: str,
        metadata: dict[str, str],
        behavior: Callable[..., Awaitable[Any]],
        parse: Callable[[bytes], Any] | None,
    ):
        async def call(data: Any, context: grpc.aio.ServicerContext) -> Any:
            rid = metadata.get(REQUEST_ID_HEADER) or new_request_id()
            token = request_id_var.set(rid)
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                request = _parse(parse, data) if parse is not None else data
                for hook in self.pre_call:
                    await hook(method, metadata)
                if found := violations(request):
                    raise InvalidArgument(found[0].field, found[0].description, *found[1:])
                return await behavior(request, context)
            except ServiceError as err:
                code, trailer = status_of(err)
                await context.abort(code, err.message, trailing_metadata=trailer)
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except NotImplementedError:
                # The generated base servicer's answer for an RPC a service does not serve yet.
                code = grpc.StatusCode.UNIMPLEMENTED
                await context.abort(code, f"{method} is not implemented yet")
            except Exception as exc:
                if _is_unavailable(exc):
                    code = grpc.StatusCode.UNAVAILABLE
                    error_log.warning("dependency unavailable", extra={"method": method, "error": repr(exc)})
                    await context.abort(code, "a service dependency is unavailable; retry later")
                code = grpc.StatusCode.INTERNAL
                error_log.exception("unhandled error", extra={"method": method})
                await context.abort(code, f"internal error (request id {rid})")
            finally:
                ms = (time.perf_counter() - started) * 1000
                # Every request has a line in the edge's access log; here, by default, only failed
                # calls (but ordinary refusals) and slow ones: a JSON line per call would cost ~15%
                # of a service's CPU.
                failed = code is not grpc.StatusCode.OK and code not in EXPECTED_REFUSALS
                worth_a_line = self.log_all or failed or ms >= self.slow_ms
                if self.log_some and worth_a_line and not method.startswith(HEALTH_PREFIX):
                    log.info("call", extra={"method": method, "code": code.name, "ms": round(ms, 2)})
                request_id_var.reset(token)

        return call
