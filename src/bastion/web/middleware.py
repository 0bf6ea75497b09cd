"""Pure ASGI middleware: client IP, security headers, body size limit.

Pure ASGI rather than BaseHTTPMiddleware: these run on every request of the hot path.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Hot GET endpoints answered here, before FastAPI's routing and dependency solving, which
# cost more than the endpoint's own work (docs/performance.md). A handler gets the inner
# app and the scope and returns an ASGI response, or None to let the request take the
# normal route (errors, anything unusual): the normal route then answers exactly as it
# always does. Requests with a query string always take the normal route.
FastPath = Callable[
    [Any, Scope], Awaitable[Callable[[Scope, Receive, Send], Awaitable[None]] | None]
]
FAST_GET: dict[str, FastPath] = {}
# POST endpoints dispatched straight from the ASGI layer: ``async def endpoint(request)``
# handlers without dependencies, on hot paths (the token endpoint: every refresh).
# Routing through every router and FastAPI's middleware stack cost a third of a refresh
# grant's CPU. Errors go to the app's own exception handlers, so answers are the same.
# An endpoint may answer None: the request (its body replayed) then goes through the app
# as usual, which is how the login endpoint leaves malformed bodies to FastAPI's own
# validation and its 422 answers.
FAST_POST: dict[str, Callable[[Request], Awaitable[Response | None]]] = {}


def client_ip(
    peer: str | None, forwarded_for: str | None, trusted: Sequence[IpNetwork]
) -> str | None:
    """SPEC §2: the socket peer, or the rightmost untrusted address of X-Forwarded-For
    when the peer is a trusted proxy."""
    if not peer or not trusted or not forwarded_for:
        return peer

    def is_trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in trusted)

    if not is_trusted(peer):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # garbage in the chain: believe nothing beyond the proxy
        if not is_trusted(hop):
            return hop
    return hops[0] if hops else peer


CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'"
)


class SecurityMiddleware:
    """Resolves the client IP into ``scope["state"]["client_ip"]``, adds the headers of
    SPEC §2 to every response, and refuses bodies over the limit with 413."""

    def __init__(
        self, app: ASGIApp, *, trusted: Sequence[IpNetwork], max_body: int, https: bool
    ) -> None:
        self.app = app
        self.trusted = list(trusted)
        self.max_body = max_body
        headers = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"strict-origin-when-cross-origin"),
            (b"content-security-policy", CSP.encode()),
            (b"x-frame-options", b"DENY"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
        ]
        self.headers = headers
        self.hsts = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        peer = client[0] if client else None
        xff = None
        length = None
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                xff = (
                    value.decode("latin-1") if xff is None else xff + "," + value.decode("latin-1")
                )
            elif name == b"content-length":
                length = value
        state = scope.setdefault("state", {})
        state["client_ip"] = client_ip(peer, xff, self.trusted)
        over_https = scope.get("scheme") == "https" or self.https

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                hdrs = list(message.get("headers", []))
                present = {k.lower() for k, _ in hdrs}
                hdrs.extend(h for h in self.headers if h[0] not in present)
                if over_https:
                    hdrs.append(self.hsts)
                message["headers"] = hdrs
            await send(message)

        if length is not None:
            try:
                too_big = int(length) > self.max_body
            except ValueError:
                too_big = True
            if too_big:
                await _error(
                    send_with_headers, 413, "payload_too_large", "The request body is too large."
                )
                return

        received = 0
        exceeded = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    exceeded = True
                    raise BodyTooLarge()
            return message

        if scope["method"] == "GET" and not scope.get("query_string"):
            fast = FAST_GET.get(scope["path"])
            if fast is not None:
                response = await fast(self.app, scope)
                if response is not None:
                    await response(scope, receive, send_with_headers)
                    return

        elif scope["method"] == "POST" and not scope.get("query_string"):
            endpoint = FAST_POST.get(scope["path"])
            if endpoint is not None:
                await self._direct(endpoint, scope, limited_receive, send_with_headers)
                return

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except BodyTooLarge:
            if exceeded:
                await _error(
                    send_with_headers, 413, "payload_too_large", "The request body is too large."
                )

    async def _direct(
        self,
        endpoint: Callable[[Request], Awaitable[Response | None]],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        scope.setdefault("app", self.app)  # as Starlette sets it; get_bx reads it
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except Exception as exc:  # noqa: BLE001 - answered by the app's own handlers
            response = await _handler_for(self.app, exc)(request, exc)
        if response is None:
            await self.app(scope, _replay(await request.body(), receive), send)
            return
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over a body already read, then waits on the client."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _handler_for(app: Any, exc: Exception) -> Any:
    """The exception handler Starlette would pick: the nearest class in the MRO."""
    handlers = getattr(app, "exception_handlers", {})
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    raise exc


class BodyTooLarge(HTTPException):
    """An HTTPException so that FastAPI's body parsing lets it through as a 413."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail="The request body is too large.")


async def _error(send: Any, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": code, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
