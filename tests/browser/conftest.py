"""Browser tests: Playwright (Python) driving Debian's chromium against a real
``bastion serve`` process. One browser per test session; a fresh context per test.

Chromium comes from apt (``/usr/bin/chromium``; ``python3 dev.py test`` installs it),
never from a download. Missing chromium: the tests skip, or fail under ``CI=true``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mailsink import MailSink
from tests.support import IN_CI, Server, database

CHROMIUM = os.environ.get("BASTION_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(
    os.environ.get("BASTION_SCREENSHOTS") or Path(tempfile.gettempdir()) / "bastion-screenshots"
)
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# Lockout after 3 failures keeps the admin test short.
SITE_ENV = {"BASTION_LOCKOUT_THRESHOLD": "3"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail(f"CI=true but {CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture(scope="session")
def mail() -> Iterator[MailSink]:
    """A real SMTP server (aiosmtpd) that catches what Bastion's mail worker sends."""
    sink = MailSink().start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory, mail: MailSink) -> Iterator[Server]:
    """One SQLite server for the browser suite, mailing to ``mail``."""
    tmp = tmp_path_factory.mktemp("pages-sqlite")
    with database("sqlite", tmp) as url:
        srv = Server(url, tmp, env={**SITE_ENV, "BASTION_SMTP_URL": mail.url}).start()
        try:
            yield srv
        finally:
            srv.stop()


@pytest.fixture
def new_context(browser: Any, site: Server) -> Iterator[Any]:
    """Factory of browser contexts (separate cookie jars = separate devices)."""
    contexts: list[Any] = []

    def make(**kw: Any) -> Any:
        kw.setdefault("base_url", site.url)
        kw.setdefault("viewport", DESKTOP)
        ctx = browser.new_context(**kw)
        ctx.set_default_timeout(15_000)
        contexts.append(ctx)
        return ctx

    yield make
    for ctx in contexts:
        ctx.close()


@pytest.fixture
def page(new_context: Any) -> Any:
    return new_context().new_page()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
