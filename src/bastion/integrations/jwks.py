"""Verifying Bastion's access tokens in another process, from its published keys
(``GET /.well-known/jwks.json``, SPEC §8), with PyJWT's ``PyJWKClient``.

The algorithm is pinned (EdDSA or ES256; never ``none``, never HMAC, so a public key can
not be replayed as an HMAC secret), ``exp``/``iat``/``sub``/``iss``/``aud`` are required,
and an unknown ``kid`` refetches the key set at most once per ``min_refresh`` seconds, so
that forged tokens cannot make every request hit Bastion.

What it cannot see offline: a token whose session was revoked or whose ``ver`` went
stale stays valid until its ``exp`` (``ACCESS_TOKEN_TTL``, 15 minutes by default).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import jwt
from jwt import PyJWKClient

from bastion.integrations.identity import BastionUnavailable

ALGORITHMS = ("EdDSA", "ES256")


class JwksVerifier:
    def __init__(
        self,
        jwks_url: str,
        *,
        issuer: str,
        audience: str = "bastion",
        algorithms: Sequence[str] = ALGORITHMS,
        leeway: int = 0,
        cache_seconds: int = 300,
        min_refresh: float = 30.0,
        timeout: int = 5,
    ) -> None:
        if not algorithms or any(a.upper().startswith(("HS", "NONE")) for a in algorithms):
            raise ValueError("only asymmetric algorithms can be verified from a JWKS")
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.algorithms = list(algorithms)
        self.leeway = leeway
        self.min_refresh = min_refresh
        self._client = PyJWKClient(
            jwks_url, cache_keys=False, cache_jwk_set=True, lifespan=cache_seconds, timeout=timeout
        )
        self._lock = threading.Lock()
        self._last_refresh = 0.0

    def _key_for(self, kid: str) -> Any:
        try:
            keys = self._client.get_signing_keys()
            for k in keys:
                if k.key_id == kid:
                    return k
            with self._lock:
                if time.monotonic() - self._last_refresh < self.min_refresh:
                    return None
                self._last_refresh = time.monotonic()
            for k in self._client.get_signing_keys(refresh=True):
                if k.key_id == kid:
                    return k
            return None
        except jwt.PyJWKClientConnectionError as exc:
            raise BastionUnavailable(f"cannot fetch the JWKS: {exc}") from None
        except jwt.PyJWKClientError:
            return None  # e.g. a key set with no usable keys

    def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a valid token, or None. Raises BastionUnavailable when the key
        set cannot be fetched (fail closed)."""
        if not token or len(token) > 8192:
            return None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        kid = header.get("kid")
        if header.get("alg") not in self.algorithms or not isinstance(kid, str):
            return None
        key = self._key_for(kid)
        if key is None:
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.PyJWTError:
            return None
        return claims

    async def averify(self, token: str) -> dict[str, Any] | None:
        """``verify`` off the event loop (the key fetch is blocking I/O)."""
        return await asyncio.to_thread(self.verify, token)
