"""Errors a service raises for its callers, free of gRPC so domain code can use them.

The server interceptor maps each to its gRPC status (and Envoy to the HTTP code): the message is
shown to the client, so it must say what is wrong in the caller's terms. `field` names the
request field at fault (AIP-193 BadRequest field violation).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class ServiceError(Exception):
    """Base class: a failure the caller should see with its own status code."""

    status = "UNKNOWN"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError):
    """The request is malformed; nothing was changed. One or more fields are named."""

    status = "INVALID_ARGUMENT"

    def __init__(self, field: str, description: str, *more: FieldViolation) -> None:
        self.violations = (FieldViolation(field, description), *more)
        message = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(message)


class Unauthenticated(ServiceError):
    status = "UNAUTHENTICATED"


class PermissionDenied(ServiceError):
    status = "PERMISSION_DENIED"


class NotFound(ServiceError):
    """Also what a caller gets for a resource it may not know exists."""

    status = "NOT_FOUND"


class AlreadyExists(ServiceError):
    status = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    """The request is well formed but the resource's state does not allow it."""

    status = "FAILED_PRECONDITION"


class Aborted(ServiceError):
    """A concurrent change won; the client may retry."""

    status = "ABORTED"


class ResourceExhausted(ServiceError):
    status = "RESOURCE_EXHAUSTED"


class Unavailable(ServiceError):
    """A dependency is down; the client may retry later."""

    status = "UNAVAILABLE"
