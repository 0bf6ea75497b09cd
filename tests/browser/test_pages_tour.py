"""Every page, at desktop width (light theme) and phone width (dark theme): a screenshot
of each, and axe-core (from the npm registry, injected by the test) finds no serious or
critical accessibility violation on any of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.browser.conftest import DESKTOP, PHONE
from tests.browser.helpers import (
    axe_source,
    axe_violations,
    next_totp,
    register_ui,
    sign_in_ui,
    sign_out_ui,
)
from tests.support import IN_CI, STRONG, Server, unique_email

VARIANTS = {
    "desktop": {"viewport": DESKTOP, "color_scheme": "light"},
    "phone-dark": {"viewport": PHONE, "color_scheme": "dark", "is_mobile": True},
}


@pytest.fixture(scope="module")
def axe() -> str:
    source = axe_source()
    if source is None:
        if IN_CI:
            pytest.fail("CI=true but axe-core could not be installed from npm")
        pytest.skip("axe-core not available (npm install axe-core)")
    return source


@pytest.fixture(scope="module")
def admin_email(site: Server) -> str:
    email = unique_email("tour-admin")
    made = site.cli(
        "create-user",
        "--email",
        email,
        "--name",
        "Ada Admin",
        "--role",
        "admin",
        "--password-stdin",
        stdin=STRONG + "\n",
    )
    assert made.returncode == 0, made.stderr
    return email


def tour(page: Any, shoot: Callable[[str], None], admin_email: str) -> None:
    page.goto("/login")
    shoot("login")
    page.goto("/register")
    shoot("register")
    page.get_by_label("Email").fill(unique_email("tour"))
    page.get_by_label("Password", exact=True).fill("password")
    page.get_by_role("button", name="Create account").click()
    page.locator("#f-password-error").wait_for()
    shoot("register-error")
    page.goto("/forgot-password")
    shoot("forgot-password")
    page.goto("/reset-password?token=example-token")
    shoot("reset-password")
    page.goto("/verify-email?token=example-token")
    shoot("verify-email")

    email = register_ui(page)
    shoot("account")
    page.get_by_label("Confirm your password").fill(STRONG)
    page.get_by_role("button", name="Set up two-factor").click()
    secret = page.locator("#totp-secret").inner_text().replace(" ", "").strip()
    shoot("mfa-setup")
    import pyotp

    page.get_by_label("6-digit code").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Turn on two-factor").click()
    page.wait_for_url("**/account?done=mfa_enabled")
    page.goto("/admin")
    shoot("forbidden")
    sign_out_ui(page)

    sign_in_ui(page, email)
    page.wait_for_url("**/mfa*")
    shoot("mfa")
    page.get_by_label("Authentication code").fill(next_totp(secret))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url("**/account")
    shoot("account-mfa-on")
    sign_out_ui(page)

    sign_in_ui(page, admin_email, path="/admin")
    page.wait_for_url("**/admin")
    shoot("admin")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_page_screenshot_and_no_serious_axe_violation(
    variant: str, new_context: Any, screenshots: Any, axe: str, admin_email: str
) -> None:
    # bypass_csp lets the test inject axe; the pages themselves never need it.
    page = new_context(bypass_csp=True, **VARIANTS[variant]).new_page()
    problems: dict[str, list[dict[str, Any]]] = {}

    def shoot(name: str) -> None:
        page.wait_for_load_state("load")
        page.screenshot(path=str(screenshots / f"{name}-{variant}.png"), full_page=True)
        found = axe_violations(page, axe)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        if overflow > 0:
            found.append({"id": "horizontal-scroll", "impact": "serious", "nodes": [overflow]})
        if found:
            problems[name] = found

    tour(page, shoot, admin_email)
    assert not problems, problems
