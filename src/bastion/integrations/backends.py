"""How an app learns who is calling: in-process (the app shares Bastion's database) or
remote (it asks a running Bastion over HTTP, or checks its JWTs against the JWKS)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from sqlalchemy.exc import InterfaceError, OperationalError

from bastion.core.rbac import DEFAULT_ROLES, permissions_for
from bastion.integrations.identity import BastionUnavailable, Identity
from bastion.integrations.jwks import JwksVerifier

if TYPE_CHECKING:
    from bastion.runtime import Bastion
    from bastion.settings import Settings

# The database cannot be reached: fail closed (503), never as anonymous.
DATABASE_DOWN = (OperationalError, InterfaceError, OSError, ConnectionError, TimeoutError)


class Backend(Protocol):
    async def from_cookie(self, token: str) -> Identity | None: ...

    async def from_bearer(self, token: str) -> Identity | None: ...

    async def close(self) -> None: ...


class InProcess:
    """Validates the ``bastion_session`` cookie with ``bastion.flows.sessions.validate``
    on a Bastion container built from ``Settings`` (same database and SECRET_KEY as the
    Bastion server), and bearer tokens with Bastion's own token checks. Revocation
    is seen at once: nothing is cached."""

    def __init__(self, settings: Settings | None = None) -> None:
        from bastion.settings import load_settings

        self.settings = settings or load_settings()
        self._bx: Bastion | None = None
        self._lock = asyncio.Lock()

    async def container(self) -> Bastion:
        if self._bx is None:
            async with self._lock:
                if self._bx is None:
                    from bastion.runtime import Bastion

                    self._bx = Bastion.create(self.settings)
        return self._bx

    def _identity(self, auth: Any) -> Identity:
        from bastion.flows.sessions import csrf_token_for

        user = dict(auth.user)
        csrf = None
        if auth.via == "cookie" and auth.session_id is not None and self._bx is not None:
            csrf = csrf_token_for(self._bx, auth.session_id)
        return Identity.from_user(
            user,
            permissions_for(self.settings.roles, user["role"]),
            via=auth.via,
            session_id=auth.session_id,
            csrf_token=csrf,
        )

    async def from_cookie(self, token: str) -> Identity | None:
        from bastion.flows import sessions
        from bastion.flows.context import utcnow

        bx = await self.container()
        try:
            auth = await sessions.validate(bx, token, utcnow())
        except DATABASE_DOWN as exc:
            raise BastionUnavailable(type(exc).__name__) from None
        return None if auth is None else self._identity(auth)

    async def from_bearer(self, token: str) -> Identity | None:
        try:
            from bastion.flows.tokens import verify_bearer
        except ImportError:  # a Bastion without access tokens
            return None
        bx = await self.container()
        try:
            auth = await verify_bearer(bx, token)
        except DATABASE_DOWN as exc:
            raise BastionUnavailable(type(exc).__name__) from None
        return None if auth is None else self._identity(auth)

    async def close(self) -> None:
        if self._bx is not None:
            await self._bx.close()
            self._bx = None


class _TtlCache:
    """A small LRU with expiry, keyed by the SHA-256 of the cookie (never the cookie)."""

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl, self.size = ttl, size
        self._data: OrderedDict[str, tuple[float, Identity | None]] = OrderedDict()

    def get(self, key: str) -> tuple[bool, Identity | None]:
        hit = self._data.get(key)
        if hit is None or hit[0] < time.monotonic():
            self._data.pop(key, None)
            return False, None
        self._data.move_to_end(key)
        return True, hit[1]

    def put(self, key: str, value: Identity | None) -> None:
        if self.ttl <= 0:
            return
        self._data[key] = (time.monotonic() + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)


class Remote:
    """Asks a running Bastion: ``GET {url}/api/auth/session`` with the caller's cookie
    (answers cached ``cache_ttl`` seconds, so a revoked session may pass that long), and
    verifies bearer JWTs offline against ``{url}/.well-known/jwks.json``."""

    def __init__(
        self,
        url: str,
        *,
        cache_ttl: float = 5.0,
        cache_size: int = 10_000,
        audience: str = "bastion",
        issuer: str | None = None,
        roles: Mapping[str, list[str]] | None = None,
        timeout: float = 5.0,
        cookie_name: str = "bastion_session",
    ) -> None:
        self.url = url.rstrip("/")
        self.cookie_name = cookie_name
        self.roles = dict(roles or DEFAULT_ROLES)
        self._cache = _TtlCache(cache_ttl, cache_size)
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout)
        self.jwks = JwksVerifier(
            f"{self.url}/.well-known/jwks.json", issuer=issuer or self.url, audience=audience
        )

    async def from_cookie(self, token: str) -> Identity | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        hit, cached = self._cache.get(key)
        if hit:
            return cached
        try:
            r = await self._http.get(
                "/api/auth/session",
                headers={"Cookie": f"{self.cookie_name}={token}", "Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise BastionUnavailable(f"cannot reach Bastion: {type(exc).__name__}") from None
        if r.status_code == 401:
            self._cache.put(key, None)
            return None
        if r.status_code != 200:
            raise BastionUnavailable(f"Bastion answered {r.status_code}")
        body = r.json()
        user = body["user"]
        identity = Identity.from_user(
            user,
            user.get("permissions") or [],
            via="cookie",
            session_id=(body.get("session") or {}).get("id"),
            csrf_token=body.get("csrf_token"),
        )
        self._cache.put(key, identity)
        return identity

    async def from_bearer(self, token: str) -> Identity | None:
        claims = await self.jwks.averify(token)
        if claims is None:
            return None
        role = str(claims.get("role") or "")
        return Identity(
            id=str(claims["sub"]),
            email=claims.get("email"),
            name=claims.get("name"),
            role=role,
            permissions=frozenset(permissions_for(self.roles, role)),
            via="bearer",
            session_id=claims.get("sid"),
            claims=claims,
        )

    async def close(self) -> None:
        await self._http.aclose()
