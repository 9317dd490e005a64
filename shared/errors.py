"""One error hierarchy for every runtime.

Each runtime maps an ``AppError`` to its HTTP response in exactly one place; the JSON body is always
``{"error": {"code", "message", "details"}}`` and never carries a stack trace.
"""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status = 500
    code = "internal_error"

    def __init__(
        self, message: str, *, details: Any = None, code: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        # Seconds after which a retry may succeed: a "not now" answer says so (RFC 9110 10.2.3).
        self.retry_after = retry_after
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


class BadRequest(AppError):
    status = 400
    code = "bad_request"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"


class Forbidden(AppError):
    status = 403
    code = "forbidden"


class NotFound(AppError):
    status = 404
    code = "not_found"


class MethodNotAllowed(AppError):
    status = 405
    code = "method_not_allowed"


class Conflict(AppError):
    status = 409
    code = "conflict"


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(AppError):
    status = 415
    code = "unsupported_media_type"


class ValidationFailed(AppError):
    status = 422
    code = "validation_failed"


class RateLimited(AppError):
    status = 429
    code = "rate_limited"


class UpstreamUnavailable(AppError):
    status = 502
    code = "upstream_unavailable"


class ServiceUnavailable(AppError):
    status = 503
    code = "service_unavailable"


def internal_error_body() -> dict[str, Any]:
    """The body for an unexpected failure: says nothing about the cause."""
    return AppError("internal error").body()
