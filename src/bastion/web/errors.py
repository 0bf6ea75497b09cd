"""One mapping from errors to the JSON envelope of SPEC §2.

Domain errors carry their own status and code; framework errors are translated; a
database that cannot be reached is 503 (fail closed); anything else is a 500 with a
generic message and the details only in the log.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from bastion.flows.errors import DomainError

log = logging.getLogger("bastion.web")

HTTP_CODES = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}
NO_STORE = {"Cache-Control": "no-store"}


class ErrorBody(BaseModel):
    """The error envelope of SPEC §2 (and RFC 6749 §5.2 on the token endpoint)."""

    model_config = ConfigDict(extra="allow")

    error: str
    message: str | None = None
    error_description: str | None = None
    details: list[str] | None = None
    retry_after: int | None = None


# Documented on every route so that the OpenAPI document describes what the API really
# answers (schema fuzzing checks responses against it).
DOCUMENTED_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "Bad request",
        401: "Not authenticated or bad credentials",
        403: "Forbidden, CSRF failure or cross-site request",
        404: "Not found",
        409: "Conflict",
        413: "Body too large",
        422: "Invalid request",
        423: "Account locked",
        429: "Rate limited",
        503: "Dependency unavailable",
    }.items()
}

# Browser navigations (social login): errors are HTML pages, or the JSON envelope when
# they come from the framework (413, 503); success is a 302.
BROWSER_RESPONSES: dict[int | str, dict[str, Any]] = {
    302: {"description": "Redirect (to the provider, or back to the checked callbackUrl)"},
    **{
        status: {**doc, "content": {"text/html": {"schema": {"type": "string"}}}}
        for status, doc in {
            **DOCUMENTED_ERRORS,
            502: {"model": ErrorBody, "description": "Provider unreachable"},
        }.items()
    },
}


def envelope(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={**NO_STORE, **(headers or {})})


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
    msg = str(err.get("msg", "invalid"))
    return f"{loc}: {msg}" if loc else msg


async def domain_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)  # noqa: S101
    return envelope(exc.status, exc.body(), exc.headers)


async def validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101
    details = [_describe(e) for e in exc.errors()]
    return envelope(
        422, {"error": "invalid_request", "message": "The request is invalid.", "details": details}
    )


async def http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)  # noqa: S101
    code = HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else "The request could not be processed."
    return envelope(exc.status_code, {"error": code, "message": message}, dict(exc.headers or {}))


async def database_down(_: Request, exc: Exception) -> JSONResponse:
    log.error("database unavailable: %s", type(exc).__name__)
    return envelope(
        503,
        {"error": "service_unavailable", "message": "The service is temporarily unavailable."},
        {"Retry-After": "5"},
    )


async def client_gone(_: Request, exc: Exception) -> JSONResponse:
    """The client hung up while its body was read (load generators stopping, users
    closing a tab): nothing went wrong here, and nobody will read this answer."""
    log.debug("client disconnected before its request was read")
    return envelope(400, {"error": "invalid_request", "message": "The client disconnected."})


async def unexpected(_: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, (OSError, ConnectionError, TimeoutError)):
        return await database_down(_, exc)
    log.exception("unhandled error", exc_info=exc)
    return envelope(500, {"error": "internal_error", "message": "Something went wrong."})


def install(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, domain_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(OperationalError, database_down)
    app.add_exception_handler(InterfaceError, database_down)
    app.add_exception_handler(DBAPIError, _dbapi_error)
    # Raw driver and socket errors (the hot paths talk to asyncpg and sqlite3
    # directly): registered by class so that the ExceptionMiddleware answers 503 and the
    # connection stays usable. The catch-all ``Exception`` handler answers too, but
    # Starlette re-raises after it and the server drops the keep-alive connection.
    app.add_exception_handler(OSError, database_down)
    app.add_exception_handler(asyncpg.InterfaceError, database_down)
    app.add_exception_handler(asyncpg.PostgresConnectionError, database_down)
    app.add_exception_handler(asyncpg.CannotConnectNowError, database_down)
    app.add_exception_handler(asyncpg.OperatorInterventionError, database_down)  # shutdown
    # The sign-in's SQLite writer (store/direct.py): locked past the busy timeout, or
    # the file unreachable.
    app.add_exception_handler(sqlite3.OperationalError, database_down)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(Exception, unexpected)


async def _dbapi_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)  # noqa: S101
    if exc.connection_invalidated:
        return await database_down(request, exc)
    return await unexpected(request, exc)
