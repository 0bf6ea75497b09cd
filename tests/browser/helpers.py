"""Steps shared by the browser tests: they act through the pages like a person would."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pyotp

from tests.mailsink import MailSink, text_part
from tests.support import STRONG, unique_email

AXE_CACHE = Path.home() / ".cache" / "bastion-tests"
AXE_VERSION = "4.14.1"  # pinned: the page tests' accessibility rules change only here
LINK = re.compile(r"https?://[^\s\"'<>]+")


def register_ui(page: Any, email: str | None = None, password: str = STRONG) -> str:
    email = email or unique_email("page")
    page.goto("/register")
    page.get_by_label("Name").fill("Page Tester")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url("**/account")
    return email


def sign_in_ui(page: Any, email: str, password: str = STRONG, path: str = "/login") -> None:
    if path:
        page.goto(path)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()


def sign_out_ui(page: Any) -> None:
    page.get_by_role("button", name="Sign out", exact=True).click()
    page.wait_for_url("**/login?done=signed_out")


def mailed_link(mail: MailSink, email: str, event: str) -> str:
    """The link of the newest ``event`` mail to ``email``, as caught by the SMTP sink."""
    messages = mail.wait_for(email, event)
    links = [u for u in LINK.findall(text_part(messages[-1])) if "token=" in u]
    assert links, text_part(messages[-1])
    return str(links[0])


def totp_in(secret: str, seconds: int) -> str:
    return str(pyotp.TOTP(secret).at(time.time() + seconds))


def next_totp(secret: str) -> str:
    """A code for the next 30 s step: accepted (±1 step) and never the one just used."""
    return totp_in(secret, 30)


def enable_mfa_ui(page: Any, password: str = STRONG) -> tuple[str, list[str]]:
    """Set up MFA on the account page; returns the TOTP secret and the backup codes read
    from the page."""
    page.goto("/account")
    page.get_by_label("Confirm your password").fill(password)
    page.get_by_role("button", name="Set up two-factor").click()
    secret = page.locator("#totp-secret").inner_text().replace(" ", "").strip()
    codes = [c.strip() for c in page.locator("#backup-codes li").all_inner_texts()]
    page.get_by_label("6-digit code").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Turn on two-factor").click()
    page.wait_for_url("**/account?done=mfa_enabled")
    return secret, codes


def axe_source() -> str | None:
    """axe-core from the npm registry, at the pinned ``AXE_VERSION`` (``npm install
    axe-core@AXE_VERSION`` into a cache dir), so that a new release's rules cannot turn
    the page tests red (or green) on their own."""

    def installed(base: Path) -> Path | None:
        package = base / "node_modules" / "axe-core"
        try:
            version = json.loads((package / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            return None
        script = package / "axe.min.js"
        return script if version == AXE_VERSION and script.exists() else None

    for base in (Path.cwd(), AXE_CACHE):
        if (found := installed(base)) is not None:
            return found.read_text()
    try:
        AXE_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--prefix", str(AXE_CACHE), "--no-audit", "--no-fund",
             f"axe-core@{AXE_VERSION}"],
            check=True,
            capture_output=True,
            timeout=180,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    found = installed(AXE_CACHE)
    return None if found is None else found.read_text()


def axe_violations(page: Any, source: str) -> list[dict[str, Any]]:
    """Serious and critical axe-core violations of the current page (WCAG 2.x A/AA)."""
    page.add_script_tag(content=source)
    result = page.evaluate(
        "() => axe.run(document, {runOnly: {type: 'tag', values: "
        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"
    )
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
