"""Social login test harness: a real OpenID provider (panva/oidc-provider under Node,
tests/oidc_provider/), a local server speaking GitHub's OAuth and REST endpoints
(tests/github_emulator.py), and a cookie-keeping "browser" that walks the redirects
and fills in the provider's sign-in and consent pages.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from tests.support import ROOT, TLS, free_port

PROVIDER_DIR = ROOT / "tests" / "oidc_provider"


def _wait_for_port(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(url, timeout=1, verify=TLS)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start: {log.read_text()[-2000:]}")


@contextmanager
def oidc_provider(tmp: Path) -> Iterator[str]:
    """Start the OpenID provider; yield its issuer URL."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("Node.js is required for the OpenID provider of the tests")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=PROVIDER_DIR,
            check=True,
            capture_output=True,
            timeout=300,
        )
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    log = tmp / f"oidc-provider-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [node, "server.mjs"],
            cwd=PROVIDER_DIR,
            env={"PATH": "/usr/bin:/bin", "PORT": str(port), "NODE_ENV": "test"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(proc, issuer + "/.well-known/openid-configuration", log)
        yield issuer
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def register_client(issuer: str, redirect_uri: str) -> tuple[str, str]:
    """Register Bastion as a client (OpenID Connect Dynamic Client Registration)."""
    response = httpx.post(
        issuer + "/reg",
        json={"redirect_uris": [redirect_uri], "client_name": "Bastion tests"},
        timeout=10,
        verify=TLS,
    )
    response.raise_for_status()
    body = response.json()
    return body["client_id"], body["client_secret"]


@dataclass
class GitHub:
    base_url: str
    client_id: str
    client_secret: str

    @property
    def api_url(self) -> str:
        return self.base_url + "/api/v3"


@contextmanager
def github_emulator(tmp: Path) -> Iterator[GitHub]:
    port = free_port()
    gh = GitHub(f"http://127.0.0.1:{port}", "Iv1." + secrets.token_hex(8), secrets.token_hex(20))
    log = tmp / f"github-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "github_emulator.py"), str(port),
             gh.client_id, gh.client_secret],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_for_port(proc, gh.base_url + "/api/v3/user", log)
        yield gh
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# The browser ------------------------------------------------------------------------

FORM = re.compile(r'<form method="post" action="([^"]+)"(?: data-prompt="([a-z]+)")?')


class Browser:
    """Keeps cookies like a browser (per host, not per port) and follows redirects by
    hand, stopping before Bastion's callback so tests can inspect or tamper with it."""

    def __init__(self, bastion_url: str) -> None:
        self.bastion = bastion_url
        self.http = httpx.Client(timeout=30, follow_redirects=False, verify=TLS)

    def close(self) -> None:
        self.http.close()

    def is_callback(self, url: str) -> bool:
        return url.startswith(self.bastion + "/api/auth/oauth/") and urlsplit(url).path.endswith(
            "/callback"
        )

    def authorize(self, provider: str, callback: str | None = "/p") -> httpx.Response:
        params = {"callbackUrl": callback} if callback is not None else {}
        return self.http.get(f"{self.bastion}/api/auth/oauth/{provider}/authorize", params=params)

    def walk(self, url: str, method: str = "GET", data: dict[str, str] | None = None) -> Any:
        """Follow redirects from ``url``; return the callback URL (str) when the provider
        sends the browser back to Bastion, or the first page (httpx.Response)."""
        for _ in range(20):
            if self.is_callback(url):
                return url
            response = self.http.request(method, url, data=data)
            method, data = "GET", None
            if response.status_code not in (301, 302, 303, 307, 308):
                return response
            url = urljoin(str(response.url), response.headers["location"])
        raise AssertionError("too many redirects")

    def provider_round(
        self,
        start: str,
        *,
        email: str | None,
        verified: bool = True,
        sub: str | None = None,
        name: str = "Social User",
        consent: bool = True,
    ) -> str:
        """Sign in at the OpenID provider as the given end-user and allow (or deny)
        consent; return the callback URL the provider redirects to."""
        result = self.walk(start)
        for _ in range(4):
            if isinstance(result, str):
                return result
            assert result.status_code == 200, result.text[:500]
            forms = FORM.findall(result.text)
            prompts = {prompt: action for action, prompt in forms}
            base = str(result.url)
            if "login" in prompts:
                fields = {
                    "sub": sub or "sub-" + secrets.token_hex(8),
                    "email": email or "",
                    "email_verified": "true" if verified else "false",
                    "name": name,
                }
                result = self.walk(urljoin(base, prompts["login"]), "POST", fields)
            elif "consent" in prompts:
                action = prompts["consent"] if consent else prompts["deny"]
                result = self.walk(urljoin(base, action), "POST", {})
            else:
                raise AssertionError("unexpected provider page: " + result.text[:500])
        raise AssertionError("the provider never redirected back")

    def github_round(
        self, start: str, *, user_id: int, login: str, emails: list[dict[str, Any]],
        allow: bool = True,
    ) -> str:  # fmt: skip
        page = self.walk(start)
        assert isinstance(page, httpx.Response) and page.status_code == 200, page
        hidden = dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
        import html

        fields = {k: html.unescape(v) for k, v in hidden.items()}
        fields.update(
            id=str(user_id),
            login=login,
            name=login.title(),
            emails=json.dumps(emails),
            decision="allow" if allow else "cancel",
        )
        result = self.walk(urljoin(str(page.url), "/login/oauth/authorize"), "POST", fields)
        assert isinstance(result, str), result
        return result

    def sign_in(
        self, provider: str = "local", callback: str | None = "/p", **who: Any
    ) -> httpx.Response:
        """The whole round trip; returns Bastion's answer to the callback."""
        start = self.authorize(provider, callback)
        assert start.status_code == 302, start.text
        if provider == "github":
            url = self.github_round(start.headers["location"], **who)
        else:
            url = self.provider_round(start.headers["location"], **who)
        return self.http.get(url)

    def session(self) -> httpx.Response:
        return self.http.get(self.bastion + "/api/auth/session")
