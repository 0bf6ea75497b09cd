"""Social login providers from ``BASTION_OAUTH_PROVIDERS`` (SPEC §9), checked at start.

``google`` and every entry with an ``issuer`` are OpenID Connect (configured by
discovery); ``github`` is OAuth 2.0 with GitHub's documented endpoints, which
``base_url``/``api_url`` move to a GitHub Enterprise server. ``http://`` URLs are
accepted only on loopback hosts (development). Any problem is a ``ValueError`` whose
message names the provider, so that the server refuses to start with one line.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

GOOGLE_ISSUER = "https://accounts.google.com"
GITHUB_BASE_URL = "https://github.com"
GITHUB_API_URL = "https://api.github.com"
OIDC_SCOPES = ("openid", "email", "profile")
GITHUB_SCOPES = ("read:user", "user:email")

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_COMMON_KEYS = {"client_id", "client_secret", "allowed_domains", "display_name"}
_KEYS = {
    "oidc": _COMMON_KEYS | {"issuer"},
    "github": _COMMON_KEYS | {"base_url", "api_url"},
}


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    kind: Literal["oidc", "github"]
    client_id: str
    client_secret: str
    display_name: str
    allowed_domains: tuple[str, ...] = ()
    issuer: str = ""  # OIDC
    base_url: str = ""  # GitHub: where the browser authorizes and the code is exchanged
    api_url: str = ""  # GitHub: REST API root

    @property
    def scopes(self) -> tuple[str, ...]:
        return OIDC_SCOPES if self.kind == "oidc" else GITHUB_SCOPES

    def domain_allowed(self, email: str) -> bool:
        if not self.allowed_domains:
            return True
        domain = email.rpartition("@")[2].lower()
        return domain in self.allowed_domains


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str) -> str:
    """An absolute https URL (http only on a loopback host), without query or fragment;
    returned without a trailing slash."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise ValueError(f"{what} is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError(f"{what} must be an absolute https:// URL")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ValueError(f"{what} must use https:// (http:// only on loopback hosts)")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{what} must not carry credentials, a query or a fragment")
    return url.rstrip("/")


def _text(entry: dict[str, Any], key: str, name: str, required: bool = True) -> str:
    value = entry.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"provider {name!r}: {key} must be a non-empty string")
    return value.strip()


def _domains(entry: dict[str, Any], name: str) -> tuple[str, ...]:
    raw = entry.get("allowed_domains", [])
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(d, str) for d in raw):
        raise ValueError(f"provider {name!r}: allowed_domains must be a list of domain names")
    domains = tuple(d.strip().lower().lstrip("@") for d in raw)
    for domain in domains:
        if not _DOMAIN.match(domain):
            raise ValueError(f"provider {name!r}: {domain!r} is not a domain name")
    return domains


def parse_provider(name: str, entry: Any) -> ProviderConfig:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"provider name {name!r} must be lowercase letters, digits, - or _")
    if not isinstance(entry, dict):
        raise ValueError(f"provider {name!r} must be a JSON object")
    kind: Literal["oidc", "github"]
    if name == "github" and "issuer" not in entry:
        kind = "github"
    elif name == "google" or "issuer" in entry:
        kind = "oidc"
    else:
        raise ValueError(f"provider {name!r} needs an issuer (only google and github are built in)")
    unknown = sorted(set(entry) - _KEYS[kind])
    if unknown:
        raise ValueError(f"provider {name!r}: unknown setting {unknown[0]!r}")
    common: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "client_id": _text(entry, "client_id", name),
        "client_secret": _text(entry, "client_secret", name),
        "display_name": _text(entry, "display_name", name, required=False)
        or {"google": "Google", "github": "GitHub"}.get(name, name),
        "allowed_domains": _domains(entry, name),
    }
    prefix = f"provider {name!r}: "
    try:
        if kind == "oidc":
            issuer = _text(entry, "issuer", name, required=False) or GOOGLE_ISSUER
            # The issuer is compared exactly with the ID token's iss: keep it verbatim.
            check_url(issuer, "issuer")
            return ProviderConfig(**common, issuer=issuer)
        base_url = check_url(
            _text(entry, "base_url", name, required=False) or GITHUB_BASE_URL, "base_url"
        )
        default_api = GITHUB_API_URL if base_url == GITHUB_BASE_URL else base_url + "/api/v3"
        api_url = check_url(_text(entry, "api_url", name, required=False) or default_api, "api_url")
        return ProviderConfig(**common, base_url=base_url, api_url=api_url)
    except ValueError as exc:
        raise ValueError(prefix + str(exc)) from None


def parse_providers(raw: dict[str, Any]) -> dict[str, ProviderConfig]:
    return {name: parse_provider(name, entry) for name, entry in raw.items()}
