"""The pages of SPEC §12 in a real browser (chromium via Playwright), on SQLite."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser.conftest import PHONE
from tests.browser.helpers import (
    enable_mfa_ui,
    mailed_link,
    next_totp,
    register_ui,
    sign_in_ui,
    sign_out_ui,
)
from tests.mailsink import MailSink
from tests.support import STRONG, Server, register, unique_email

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


def test_journey_register_verify_mfa_devices_reset_and_admin_unlock(
    new_context: Any, site: Server, mail: MailSink
) -> None:
    """The path of issue 9, as one person would walk it."""
    laptop = new_context().new_page()
    # Register, then verify the address with the link caught by the SMTP sink.
    email = register_ui(laptop)
    assert laptop.get_by_text("Not verified").first.is_visible()
    laptop.goto(mailed_link(mail, email, "email_verification"))
    laptop.get_by_role("button", name="Confirm my email address").click()
    laptop.wait_for_url("**/account?done=verified")
    assert laptop.locator(".badge.ok", has_text="Verified").is_visible()

    # Sign out, sign in.
    sign_out_ui(laptop)
    sign_in_ui(laptop, email, path="")
    laptop.wait_for_url("**/account")

    # Set up MFA by reading the secret (no QR scanning) and computing a code.
    secret, codes = enable_mfa_ui(laptop)
    assert laptop.locator("#mfa .badge.ok", has_text="On").is_visible()
    sign_out_ui(laptop)

    # Sign in with a TOTP code; callbackUrl survives the MFA step.
    laptop.goto("/account?section=devices")
    sign_in_ui(laptop, email, path="")
    laptop.wait_for_url("**/mfa?callbackUrl=*")
    laptop.get_by_label("Authentication code").fill("000000")
    laptop.get_by_role("button", name="Verify").click()
    assert "not valid" in laptop.locator("#f-code-error").inner_text()
    laptop.get_by_label("Authentication code").fill(next_totp(secret))
    laptop.get_by_role("button", name="Verify").click()
    laptop.wait_for_url("**/account?section=devices")

    # A second device (a phone) signs in with a backup code: the current TOTP codes are
    # used up (a replay is refused), and waiting 30 s for the next one is slow.
    phone = new_context(viewport=PHONE, user_agent=IPHONE).new_page()
    sign_in_ui(phone, email)
    phone.wait_for_url("**/mfa*")
    phone.get_by_label("Authentication code").fill(codes[0].upper())
    phone.get_by_role("button", name="Verify").click()
    phone.wait_for_url("**/account")

    # The laptop sees two devices, itself marked, and revokes the phone.
    laptop.goto("/account")
    assert laptop.locator("#devices .devices > li").count() == 2
    this = laptop.locator("#devices .devices > li", has_text="This device")
    assert this.count() == 1
    other = laptop.locator("#devices .devices > li", has_text="iOS")
    assert "Last active" in other.inner_text()
    other.get_by_role("button", name="Revoke").click()
    laptop.wait_for_url("**/account?done=session_revoked*")
    assert laptop.locator("#devices .devices > li").count() == 1
    phone.goto("/account")
    assert urlsplit(phone.url).path == "/login"

    # Reset the password through the mailed link (from the signed-out phone).
    phone.get_by_role("link", name="Forgot your password?").click()
    phone.get_by_label("Email").fill(email)
    phone.get_by_role("button", name="Send reset link").click()
    phone.wait_for_url("**/forgot-password?sent=1")
    phone.goto(mailed_link(mail, email, "password_reset"))
    new_password = "Another-Horse-7?"
    phone.get_by_label("New password", exact=True).fill(new_password)
    phone.get_by_label("Repeat the new password").fill(new_password)
    phone.get_by_role("button", name="Set new password").click()
    phone.wait_for_url("**/login?done=reset")
    laptop.goto("/account")  # a reset ends every session
    assert urlsplit(laptop.url).path == "/login"

    # Someone guesses the password until the account locks (threshold 3 here) ...
    thief = new_context().new_page()
    for _ in range(3):
        sign_in_ui(thief, email, "Guess-guess-1!")
    sign_in_ui(thief, email, new_password)
    assert "locked" in thief.get_by_role("alert").inner_text()

    # ... and an admin unlocks it from the admin page.
    admin = new_context().new_page()
    sign_in_ui(admin, make_admin(site), path="/admin")
    admin.wait_for_url("**/admin")
    admin.get_by_role("searchbox").fill(email)
    admin.get_by_role("button", name="Search").click()
    row = admin.locator("tr", has_text=email)
    assert row.locator(".badge.bad", has_text="Locked").is_visible()
    row.get_by_role("button", name=f"Unlock {email}").click()
    admin.wait_for_url("**/admin?*done=unlocked*")
    assert admin.get_by_role("status").inner_text() == "The account was unlocked."
    assert admin.locator("tr", has_text=email).locator(".badge.ok", has_text="Active").is_visible()

    sign_in_ui(thief, email, new_password)
    thief.wait_for_url("**/mfa*")  # the password is accepted again; MFA still guards it


def make_admin(site: Server) -> str:
    email = unique_email("admin")
    made = site.cli(
        "create-user",
        "--email",
        email,
        "--role",
        "admin",
        "--password-stdin",
        stdin=STRONG + "\n",
    )
    assert made.returncode == 0, made.stderr
    return email


def test_sign_out_then_sign_in_returns_to_the_callback_url(page: Any) -> None:
    email = register_ui(page)
    sign_out_ui(page)
    assert page.get_by_role("status").inner_text() == "You have been signed out."

    page.goto("/account?tab=devices")
    url = urlsplit(page.url)
    assert url.path == "/login"
    assert parse_qs(url.query)["callbackUrl"] == ["/account?tab=devices"]
    sign_in_ui(page, email, path="")
    page.wait_for_url("**/account?tab=devices")


def test_wrong_password_error_is_tied_to_the_password_field(page: Any) -> None:
    email = register_ui(page)
    sign_out_ui(page)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill("Wrong-password-1!")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Sign in").click()
    assert answer.value.status == 401
    field = page.get_by_label("Password", exact=True)
    assert field.get_attribute("aria-invalid") == "true"
    described = (field.get_attribute("aria-describedby") or "").split()
    messages = [page.locator(f"#{i}").inner_text() for i in described]
    assert any("not correct" in m for m in messages)
    assert page.get_by_label("Email").input_value() == email  # kept, the password is not


def test_register_shows_unmet_password_rules_again(page: Any) -> None:
    page.goto("/register")
    page.get_by_label("Email").fill(unique_email("weak"))
    page.get_by_label("Password", exact=True).fill("short")
    # With JavaScript the rules tick as the password is typed (the server still decides).
    assert page.locator('#password-rules li[data-rule="lower"]').get_attribute("class") == "met"
    assert page.locator('#password-rules li[data-rule="digit"]').get_attribute("class") in (
        "",
        None,
    )
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Create account").click()
    assert answer.value.status == 422
    rules = page.locator("#password-rules li.unmet")
    assert rules.count() >= 3
    field = page.get_by_label("Password", exact=True)
    assert "f-password-error" in (field.get_attribute("aria-describedby") or "")
    assert "uppercase" in page.locator("#f-password-error").inner_text()


def test_mfa_setup_shows_qr_and_backup_codes_once(page: Any) -> None:
    register_ui(page)
    page.get_by_label("Confirm your password").fill(STRONG)
    page.get_by_role("button", name="Set up two-factor").click()
    qr = page.locator("img.qr")
    assert (qr.get_attribute("src") or "").startswith("data:image/svg+xml;base64,")
    # The QR code really renders (a data: image is allowed by the CSP, nothing inline).
    assert qr.evaluate("img => img.complete && img.naturalWidth > 100")
    codes = page.locator("#backup-codes li")
    assert codes.count() == 10
    download = page.get_by_role("link", name="Download")
    assert download.get_attribute("download") == "bastion-backup-codes.txt"
    assert page.get_by_role("button", name="Copy").is_visible()  # JavaScript on


def test_admin_changes_a_role(page: Any, site: Server) -> None:
    member = unique_email("member")
    with site.client() as client:
        assert register(client, member).status_code == 201
    sign_in_ui(page, make_admin(site), path="/admin")
    page.wait_for_url("**/admin")
    page.get_by_role("searchbox").fill(member)
    page.get_by_role("button", name="Search").click()
    row = page.locator("tr", has_text=member)
    row.get_by_label(f"Role of {member}", exact=True).select_option("editor")
    row.get_by_role("button", name=f"Save role of {member}").click()
    page.wait_for_url("**/admin?*done=role*")
    assert page.get_by_role("status").inner_text() == "The role was changed."
    row = page.locator("tr", has_text=member)
    assert row.get_by_label(f"Role of {member}", exact=True).input_value() == "editor"
    assert page.locator("#audit tbody tr", has_text="role changed").count() >= 1
    with site.client() as client:
        client.post("/api/auth/login", json={"email": member, "password": STRONG})
        assert client.get("/api/auth/session").json()["user"]["role"] == "editor"


def test_sign_in_works_with_javascript_disabled(new_context: Any, site: Server) -> None:
    email = unique_email("nojs")
    with site.client() as client:
        assert register(client, email).status_code == 201
    page = new_context(java_script_enabled=False).new_page()
    page.goto("/account")
    sign_in_ui(page, email, path="")
    page.wait_for_url("**/account")
    assert page.get_by_text(email).first.is_visible()
    sign_out_ui(page)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_color_scheme_follows_the_system(new_context: Any, scheme: str, screenshots: Any) -> None:
    page = new_context(color_scheme=scheme).new_page()
    page.goto("/login")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    r, g, b = (int(x) for x in background[background.index("(") + 1 : -1].split(",")[:3])
    luminance = (r + g + b) / 3
    assert (luminance < 60) if scheme == "dark" else (luminance > 200), background
    page.screenshot(path=str(screenshots / f"login-{scheme}.png"), full_page=True)


def test_phone_width_has_no_horizontal_scroll(new_context: Any, screenshots: Any) -> None:
    page = new_context(viewport=PHONE, is_mobile=True, has_touch=True).new_page()
    register_ui(page)
    for path in ("/account", "/admin", "/forgot-password"):
        page.goto(path)
        for width in (PHONE["width"], 320):
            page.set_viewport_size({"width": width, "height": PHONE["height"]})
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at {width}px"
    page.set_viewport_size(PHONE)
    page.goto("/account")
    page.screenshot(path=str(screenshots / "account-phone.png"), full_page=True)
