"""Talking to social login providers (SPEC §9) with Authlib's OAuth 2.0 client and
joserfc: discovery, the authorization URL, the code exchange with the PKCE verifier,
ID token validation against the provider's JWKS, and the user's identity.

OpenID Connect providers are configured by discovery (cached an hour per process; the
JWKS is fetched again when a token names an unknown key). GitHub is plain OAuth 2.0:
its identity comes from ``/user`` and its verified primary email from ``/user/emails``.
"""

from __future__ import annotations

import logging
import ssl
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from bastion.core.oauth_config import GOOGLE_ISSUER, ProviderConfig, check_url
from bastion.flows.errors import DomainError

if TYPE_CHECKING:
    import httpx
    from authlib.integrations.httpx_client import AsyncOAuth2Client


def _libs() -> tuple[Any, Any, Any]:
    """httpx, Authlib's OAuthError and its client, imported on first use: they add
    about 20 MB to a worker, which only social login needs (docs/performance.md)."""
    import authlib.deprecate  # noqa: F401 - installs its "always" filter before ours below
    import httpx
    from authlib.integrations.base_client import OAuthError

    with warnings.catch_warnings():
        # Authlib 1.9 prefers the httpx2 package and warns when it falls back to httpx.
        warnings.simplefilter("ignore", DeprecationWarning)
        from authlib.integrations.httpx_client import AsyncOAuth2Client
    return httpx, OAuthError, AsyncOAuth2Client


log = logging.getLogger("bastion.oauth")

TIMEOUT = 10.0
METADATA_TTL = 3600.0
JWKS_REFRESH_MIN = 30.0
LEEWAY = 60
# Only asymmetric signatures: never "none", and no HMAC keyed with the client secret.
ID_TOKEN_ALGS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip


class OAuthFailed(DomainError):
    """A refused or broken social sign-in: shown as an error page, nobody signed in."""

    status, code, message = 400, "oauth_failed", "The sign-in with the provider failed."

    def __init__(self, message: str, *, reason: str, status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        if status is not None:
            self.status = status


class UnknownProvider(OAuthFailed):
    def __init__(self) -> None:
        super().__init__(
            "This sign-in provider is not configured.", reason="unknown_provider", status=404
        )


class ProviderUnavailable(OAuthFailed):
    def __init__(self, detail: str) -> None:
        super().__init__(
            "The sign-in provider could not be reached or answered wrongly. Try again later.",
            reason="provider_unavailable:" + detail,
            status=502,
        )


@dataclass(frozen=True)
class Identity:
    subject: str
    email: str | None
    email_verified: bool
    name: str | None


@dataclass
class _Cached:
    value: dict[str, Any]
    fetched: float


_metadata: dict[str, _Cached] = {}
_jwks: dict[str, _Cached] = {}


_tls: ssl.SSLContext | None = None


def _verify() -> ssl.SSLContext:
    """One TLS context per process (building one per request costs milliseconds)."""
    global _tls
    if _tls is None:
        _tls = _libs()[0].create_ssl_context()
    return _tls


def _http() -> httpx.AsyncClient:
    client: httpx.AsyncClient = _libs()[0].AsyncClient(
        timeout=TIMEOUT, follow_redirects=False, verify=_verify()
    )
    return client


async def _get_json(client: httpx.AsyncClient, url: str, what: str, **kw: Any) -> Any:
    httpx = _libs()[0]
    try:
        response = await client.get(url, **kw)
    except httpx.HTTPError as exc:
        log.warning("oauth: %s request failed: %s", what, type(exc).__name__)
        raise ProviderUnavailable(what) from None
    if response.status_code != 200:
        log.warning("oauth: %s answered %s", what, response.status_code)
        raise ProviderUnavailable(what)
    try:
        return response.json()
    except ValueError:
        raise ProviderUnavailable(what) from None


async def metadata(cfg: ProviderConfig) -> dict[str, Any]:
    """The provider's endpoints: fixed for GitHub, OIDC discovery for the others."""
    if cfg.kind == "github":
        return {
            "authorization_endpoint": cfg.base_url + "/login/oauth/authorize",
            "token_endpoint": cfg.base_url + "/login/oauth/access_token",
        }
    cached = _metadata.get(cfg.name)
    if cached and time.monotonic() - cached.fetched < METADATA_TTL:
        return cached.value
    async with _http() as client:
        doc = await _get_json(
            client, cfg.issuer.rstrip("/") + "/.well-known/openid-configuration", "discovery"
        )
    # OIDC Discovery §4.3: the issuer in the document must be exactly the configured one.
    if not isinstance(doc, dict) or doc.get("issuer") != cfg.issuer:
        log.warning("oauth: discovery of %s names another issuer", cfg.name)
        raise ProviderUnavailable("discovery_issuer")
    try:
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            check_url(str(doc.get(key) or ""), key)
        if doc.get("userinfo_endpoint"):
            check_url(str(doc["userinfo_endpoint"]), "userinfo_endpoint")
    except ValueError as exc:
        log.warning("oauth: discovery of %s is unusable: %s", cfg.name, exc)
        raise ProviderUnavailable("discovery_endpoints") from None
    _metadata[cfg.name] = _Cached(doc, time.monotonic())
    return doc


def _client(cfg: ProviderConfig, meta: dict[str, Any], redirect_uri: str) -> AsyncOAuth2Client:
    if cfg.kind == "github":
        method = "client_secret_post"  # GitHub's documented parameters
    else:
        supported = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        method = (
            "client_secret_basic" if "client_secret_basic" in supported else "client_secret_post"
        )
    return _libs()[2](
        client_id=cfg.client_id,
        client_secret=cfg.client_secret,
        token_endpoint_auth_method=method,
        scope=" ".join(cfg.scopes),
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        timeout=TIMEOUT,
        follow_redirects=False,
        verify=_verify(),
    )


async def authorization_url(
    cfg: ProviderConfig, redirect_uri: str, *, state: str, verifier: str, nonce: str | None
) -> str:
    meta = await metadata(cfg)
    extra: dict[str, Any] = {"nonce": nonce} if nonce else {}
    async with _client(cfg, meta, redirect_uri) as client:
        url, _ = client.create_authorization_url(
            meta["authorization_endpoint"], state=state, code_verifier=verifier, **extra
        )
    return str(url)


async def exchange_code(
    cfg: ProviderConfig, redirect_uri: str, code: str, verifier: str
) -> dict[str, Any]:
    httpx, OAuthError, _ = _libs()
    meta = await metadata(cfg)
    async with _client(cfg, meta, redirect_uri) as client:
        try:
            token = await client.fetch_token(
                meta["token_endpoint"],
                grant_type="authorization_code",
                code=code,
                code_verifier=verifier,
                headers={"Accept": "application/json"},
            )
        except OAuthError as exc:
            log.info("oauth: %s refused the code: %s", cfg.name, exc.error)
            raise OAuthFailed(
                "The sign-in code was refused by the provider: it may have expired or been "
                "used already. Please start the sign-in again.",
                reason=f"token_error:{exc.error}",
            ) from None
        except httpx.HTTPError as exc:
            log.warning("oauth: token request to %s failed: %s", cfg.name, type(exc).__name__)
            raise ProviderUnavailable("token") from None
        except ValueError:
            raise ProviderUnavailable("token_response") from None
    if not isinstance(token, dict) or not token.get("access_token"):
        raise ProviderUnavailable("token_response")
    return dict(token)


async def identity(cfg: ProviderConfig, token: dict[str, Any], nonce: str | None) -> Identity:
    if cfg.kind == "github":
        return await _github_identity(cfg, str(token["access_token"]))
    return await _oidc_identity(cfg, token, nonce or "")


# OpenID Connect ---------------------------------------------------------------------


async def _keyset(cfg: ProviderConfig, meta: dict[str, Any], refresh: bool) -> KeySet:
    cached = _jwks.get(cfg.name)
    stale = cached is None or time.monotonic() - cached.fetched > METADATA_TTL
    if refresh and cached and time.monotonic() - cached.fetched > JWKS_REFRESH_MIN:
        stale = True
    if stale:
        async with _http() as client:
            doc = await _get_json(client, meta["jwks_uri"], "jwks")
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise ProviderUnavailable("jwks")
        cached = _Cached(doc, time.monotonic())
        _jwks[cfg.name] = cached
    assert cached is not None  # noqa: S101
    try:
        return KeySet.import_key_set(cached.value)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError):
        raise ProviderUnavailable("jwks") from None


def _bad_id_token(detail: str) -> OAuthFailed:
    return OAuthFailed(
        "The provider's identity token could not be verified.", reason="id_token:" + detail
    )


async def validate_id_token(
    cfg: ProviderConfig, meta: dict[str, Any], id_token: str, nonce: str
) -> dict[str, Any]:
    """Signature (provider JWKS, asymmetric algorithms only), iss, aud (and azp), exp,
    iat, sub and the nonce bound to this browser (OIDC Core §3.1.3.7)."""
    offered = meta.get("id_token_signing_alg_values_supported") or ["RS256"]
    algorithms = [a for a in offered if a in ID_TOKEN_ALGS] or ["RS256"]
    decoded = None
    last = ""
    for refresh in (False, True):
        keys = await _keyset(cfg, meta, refresh)
        try:
            decoded = jwt.decode(id_token, keys, algorithms=algorithms)
            break
        except (JoseError, ValueError, TypeError) as exc:
            last = type(exc).__name__
    if decoded is None:
        raise _bad_id_token("signature:" + last)
    claims = dict(decoded.claims)
    registry = jwt.JWTClaimsRegistry(
        leeway=LEEWAY,
        iss={"essential": True, "values": _issuers(cfg)},
        sub={"essential": True},
        aud={"essential": True, "value": cfg.client_id},
        exp={"essential": True},
        iat={"essential": True},
        nonce={"essential": True, "value": nonce},
    )
    try:
        registry.validate(claims)
    except JoseError as exc:
        raise _bad_id_token(getattr(exc, "claim", None) or type(exc).__name__) from None
    aud = claims.get("aud")
    if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != cfg.client_id:
        raise _bad_id_token("azp")
    if not nonce:
        raise _bad_id_token("nonce")
    return claims


def _issuers(cfg: ProviderConfig) -> list[str]:
    # Google documents both spellings of its issuer in ID tokens.
    if cfg.issuer == GOOGLE_ISSUER:
        return [GOOGLE_ISSUER, "accounts.google.com"]
    return [cfg.issuer]


def _verified(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


async def _oidc_identity(cfg: ProviderConfig, token: dict[str, Any], nonce: str) -> Identity:
    meta = await metadata(cfg)
    id_token = token.get("id_token")
    if not isinstance(id_token, str):
        raise _bad_id_token("missing")
    claims = await validate_id_token(cfg, meta, id_token, nonce)
    subject = str(claims["sub"])
    if "email" not in claims and meta.get("userinfo_endpoint"):
        # Providers may keep profile claims out of the ID token when an access token is
        # issued for userinfo (OIDC Core §5.4); its sub must match the ID token's.
        async with _http() as client:
            info = await _get_json(
                client,
                meta["userinfo_endpoint"],
                "userinfo",
                headers={"Authorization": f"Bearer {token['access_token']}"},
            )
        if not isinstance(info, dict) or str(info.get("sub")) != subject:
            raise _bad_id_token("userinfo_sub")
        claims = {**info, **{k: v for k, v in claims.items() if k in ("sub",)}}
    email = claims.get("email")
    name = claims.get("name")
    return Identity(
        subject=subject,
        email=email if isinstance(email, str) and email else None,
        email_verified=_verified(claims.get("email_verified")),
        name=name[:200] if isinstance(name, str) and name else None,
    )


# GitHub ------------------------------------------------------------------------------


async def _github_identity(cfg: ProviderConfig, access_token: str) -> Identity:
    headers = {
        "Authorization": f"Bearer {access_token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    async with _http() as client:
        user = await _get_json(client, cfg.api_url + "/user", "github_user", headers=headers)
        emails = await _get_json(
            client, cfg.api_url + "/user/emails", "github_emails", headers=headers
        )
    if not isinstance(user, dict) or user.get("id") is None or not isinstance(emails, list):
        raise ProviderUnavailable("github_user")
    primary = next(
        (e for e in emails if isinstance(e, dict) and e.get("primary") and e.get("email")), None
    )
    email = primary["email"] if primary else None
    verified = bool(primary and primary.get("verified") is True)
    name = user.get("name") or user.get("login")
    return Identity(
        subject=str(user["id"]),
        email=email if isinstance(email, str) else None,
        email_verified=verified,
        name=name[:200] if isinstance(name, str) and name else None,
    )


async def iss_parameter_required(cfg: ProviderConfig) -> bool:
    """RFC 9207: providers that announce it send ``iss`` with the authorization response
    (a defence against mix-up attacks)."""
    if cfg.kind != "oidc":
        return False
    meta = await metadata(cfg)
    return meta.get("authorization_response_iss_parameter_supported") is True
