"""flows/report.py totals: exact up to TOTALS_CAP, then capped and named in
``totals_capped``, so that the report's cost does not grow with the data (issue 10,
target 5). In-process on a real SQLite database; the HTTP shape is in
tests/test_admin_api.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bastion.flows import report
from bastion.runtime import Bastion
from bastion.settings import load_settings
from bastion.store import users as user_store
from bastion.store.migrate import upgrade
from bastion.store.tables import device_lockouts


def run_report(tmp_path: Path, users: int, locked: int, device_locks: int = 0) -> dict:
    """``users`` users, the first ``locked`` locked for anonymous clients, and
    ``device_locks`` locked device counters of the first user."""
    url = f"sqlite:///{tmp_path}/report.db"
    upgrade(url)
    settings = load_settings(
        database_url=url, secret_key="report-test-secret-" + "x" * 32, data_dir=tmp_path
    )

    async def go() -> dict:
        bx = Bastion.create(settings)
        now = datetime.now(UTC)
        try:
            async with bx.db.write() as conn:
                for i in range(users):
                    await user_store.insert(
                        conn,
                        id=f"u{i:030d}",
                        email=f"u{i}@example.com",
                        role="viewer",
                        email_verified=True,
                        mfa_enabled=False,
                        token_version=0,
                        failed_login_attempts=5 if i < locked else 0,
                        locked_until=now + timedelta(minutes=10) if i < locked else None,
                        created_at=now,
                        updated_at=now,
                    )
                for d in range(device_locks):
                    await conn.execute(
                        device_lockouts.insert().values(
                            user_id=f"u{0:030d}",
                            device_id=f"d{d}",
                            failed_login_attempts=5,
                            locked_until=now + timedelta(minutes=10),
                        )
                    )
            return await report.security_report(bx, now, limit=2)
        finally:
            await bx.close()

    return asyncio.run(go())


def test_totals_exact_below_the_cap(tmp_path: Path) -> None:
    got = run_report(tmp_path, users=5, locked=3)
    assert got["totals"]["users_without_mfa"] == 5
    assert got["totals"]["locked_accounts"] == 3
    assert got["totals_capped"] == []
    assert len(got["users_without_mfa"]) == 2  # the list honours the limit


def test_locked_accounts_total_counts_locks_like_the_list(tmp_path: Path) -> None:
    # One account locked for anonymous clients and for two of its browsers: three locks.
    got = run_report(tmp_path, users=2, locked=1, device_locks=2)
    assert got["totals"]["locked_accounts"] == 3
    assert sorted(x["scope"] for x in got["locked_accounts"]) == ["account", "device"]  # limit 2


def test_locked_device_counters_are_capped_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "TOTALS_CAP", 4)
    got = run_report(tmp_path, users=1, locked=0, device_locks=6)
    assert got["totals"]["locked_accounts"] == 4  # the cap, named as capped
    assert got["totals_capped"] == ["locked_accounts"]


def test_totals_capped_above_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "TOTALS_CAP", 4)
    got = run_report(tmp_path, users=7, locked=4)
    assert got["totals"]["users_without_mfa"] == 4
    assert got["totals_capped"] == ["users_without_mfa"]
    assert got["totals"]["locked_accounts"] == 4  # exactly the cap: not capped
    assert got["totals"]["suspicious_logins"] == 0


def test_suspicious_emails_marked_on_crossing_and_backfilled_by_the_migration(
    tmp_path: Path,
) -> None:
    """0003 marks emails already over the threshold; afterwards the failure that brings
    an email over it marks it (store/attempts.py), and the report recounts marked
    emails only."""
    import sqlite3

    from bastion.store import attempts

    url = f"sqlite:///{tmp_path}/marks.db"
    upgrade(url, "0002_admin")
    now = datetime.now(UTC)
    with sqlite3.connect(tmp_path / "marks.db") as db:
        for email, when in (
            ("recent@example.com", now),
            ("old@example.com", now - timedelta(days=2)),
        ):
            for i in range(6):
                db.execute(
                    "INSERT INTO login_attempts (email, success, created_at) VALUES (?, 0, ?)",
                    (email, (when - timedelta(minutes=i)).replace(tzinfo=None).isoformat()),
                )
    upgrade(url)
    with sqlite3.connect(tmp_path / "marks.db") as db:
        marked = [r[0] for r in db.execute("SELECT email FROM suspicious_emails")]
    assert marked == ["recent@example.com"]

    settings = load_settings(
        database_url=url, secret_key="report-test-secret-" + "x" * 32, data_dir=tmp_path
    )

    async def go() -> tuple[list[str], dict]:
        bx = Bastion.create(settings)
        try:
            found = []
            for _ in range(6):
                async with bx.db.write() as conn:
                    await attempts.record(
                        conn,
                        email="new@example.com",
                        user_id=None,
                        ip_address="203.0.113.9",
                        user_agent=None,
                        success=False,
                        failure_reason="unknown_email",
                        now=datetime.now(UTC),
                    )
                async with bx.db.read() as conn:
                    rows = await conn.exec_driver_sql("SELECT email FROM suspicious_emails")
                    found.append(",".join(sorted(r[0] for r in rows)))
            return found, await report.security_report(bx, datetime.now(UTC))
        finally:
            await bx.close()

    marks, got = asyncio.run(go())
    assert "new@example.com" not in marks[4]  # five failures: not more than five
    assert "new@example.com" in marks[5]
    listed = {r["email"]: r["failed_attempts"] for r in got["suspicious_logins"]}
    assert listed == {"recent@example.com": 6, "new@example.com": 6}
