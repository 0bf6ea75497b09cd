"""One smoke run of the pages on PostgreSQL (the rest of the browser suite uses SQLite;
tests/test_pages.py covers the pages over HTTP on both)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import DESKTOP
from tests.browser.helpers import register_ui, sign_in_ui, sign_out_ui
from tests.conftest import PG_UP
from tests.support import IN_CI, Server, postgres_database


@pytest.mark.postgres
def test_register_sign_out_sign_in_on_postgres(browser: Any, tmp_path: Path) -> None:
    if not PG_UP:
        if IN_CI:
            pytest.fail("CI=true but PostgreSQL is unreachable")
        pytest.skip("PostgreSQL not reachable")
    with postgres_database() as url:
        srv = Server(url, tmp_path).start()
        context = browser.new_context(base_url=srv.url, viewport=DESKTOP)
        try:
            page = context.new_page()
            email = register_ui(page)
            sign_out_ui(page)
            page.goto("/account")
            sign_in_ui(page, email, path="")
            page.wait_for_url("**/account")
            assert page.locator("#devices .badge", has_text="This device").is_visible()
        finally:
            context.close()
            srv.stop()
