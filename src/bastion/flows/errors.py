"""Domain errors. Each carries its HTTP status and ``error`` code (SPEC §2), so that one
handler in web/errors.py maps them all."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status = 400
    code = "bad_request"
    message = "The request could not be processed."

    def __init__(self, message: str | None = None, **extra: Any) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.extra = extra
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}


class InvalidRequest(DomainError):
    status, code, message = 422, "invalid_request", "The request is invalid."


class Unauthenticated(DomainError):
    status, code, message = 401, "unauthenticated", "Sign in first."


class Forbidden(DomainError):
    status, code, message = 403, "forbidden", "You are not allowed to do this."


class EmailNotVerified(DomainError):
    status, code, message = 403, "email_not_verified", "Confirm your email address first."


class CsrfFailed(DomainError):
    status, code, message = 403, "csrf_failed", "Missing or invalid CSRF token."


class CrossOrigin(DomainError):
    status, code, message = 403, "cross_origin", "Cross-site request refused."


class NotFound(DomainError):
    status, code, message = 404, "not_found", "Not found."


class InvalidCredentials(DomainError):
    status, code, message = 401, "invalid_credentials", "Invalid email or password."


class InvalidCode(DomainError):
    status, code, message = 401, "invalid_code", "The code is not valid."


class InvalidMfaToken(DomainError):
    status, code, message = 401, "invalid_token", "The sign-in step has expired; sign in again."


class InvalidToken(DomainError):
    status, code, message = 400, "invalid_token", "The link is invalid or has expired."


class EmailTaken(DomainError):
    status, code, message = 409, "email_taken", "An account with this email already exists."


class Conflict(DomainError):
    status, code, message = 409, "conflict", "The request conflicts with the current state."


class AlreadyVerified(Conflict):
    code, message = "already_verified", "The email address is already verified."


class MfaAlreadyEnabled(Conflict):
    code, message = "mfa_already_enabled", "Two-factor authentication is already enabled."


class WeakPassword(DomainError):
    status, code, message = 422, "weak_password", "The password does not meet the policy."

    def __init__(self, details: list[str]) -> None:
        super().__init__(details=details)


class AccountLocked(DomainError):
    status, code = 423, "account_locked"
    message = "Too many failed attempts; the account is temporarily locked."

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after=retry_after)
        self.headers = {"Retry-After": str(retry_after)}


class RateLimited(DomainError):
    status, code, message = 429, "rate_limited", "Too many requests; try again later."

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after=retry_after)
        self.headers = {"Retry-After": str(retry_after)}


class PayloadTooLarge(DomainError):
    status, code, message = 413, "payload_too_large", "The request body is too large."


class ServiceUnavailable(DomainError):
    status, code, message = 503, "service_unavailable", "The service is temporarily unavailable."


class LastAdmin(Conflict):
    code, message = "last_admin", "The last admin cannot lose the admin role."
