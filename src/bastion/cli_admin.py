"""``bastion users list`` and ``bastion audit`` (SPEC §1, §11): the logic behind the
commands in cli.py, printing Rich tables for people and JSON for machines."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from bastion.flows import admin as admin_flow
from bastion.flows import report as report_flow
from bastion.flows.context import RequestContext, utcnow
from bastion.runtime import Bastion
from bastion.settings import Settings

out = Console(highlight=False, soft_wrap=False, width=160)


async def fetch_users(
    settings: Settings, q: str | None, role: str | None, limit: int, cursor: str | None
) -> admin_flow.Page:
    bx = Bastion.create(settings)
    try:
        return await admin_flow.list_users(bx, RequestContext(), q, limit, cursor, role=role)
    finally:
        await bx.close()


def print_users(page: admin_flow.Page, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"users": page.items, "next_cursor": page.next_cursor}, indent=2))
        return
    table = Table(title=f"Users ({len(page.items)})", title_justify="left")
    for col in ("id", "email", "name", "role", "verified", "mfa", "locked until", "created"):
        table.add_column(col, overflow="fold")
    for u in page.items:
        table.add_row(
            u["id"],
            u["email"],
            u["name"] or "",
            u["role"],
            "yes" if u["email_verified"] else "no",
            "yes" if u["mfa_enabled"] else "no",
            u["locked_until"] or "",
            u["created_at"] or "",
        )
    out.print(table)
    if page.next_cursor:
        out.print(f"more: --cursor {page.next_cursor}", markup=False)


async def fetch_report(settings: Settings, limit: int) -> dict[str, Any]:
    bx = Bastion.create(settings)
    try:
        return await report_flow.security_report(bx, utcnow(), limit)
    finally:
        await bx.close()


def _table(
    title: str, total: int, rows: list[dict[str, Any]], cols: list[str], capped: bool = False
) -> Table:
    count = f"{total}+" if capped else str(total)
    shown = f"{len(rows)} of {count}" if total > len(rows) else count
    table = Table(title=f"{title} ({shown})", title_justify="left")
    for col in cols:
        table.add_column(col.replace("_", " "), overflow="fold")
    for r in rows:
        cells = []
        for col in cols:
            v = r.get(col)
            cells.append(", ".join(v) if isinstance(v, list) else "" if v is None else str(v))
        table.add_row(*cells)
    return table


def print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    t = report["totals"]
    capped = report.get("totals_capped", [])
    out.print(f"Security report, {report['generated_at']}", markup=False)
    out.print(
        _table(
            "Users without MFA",
            t["users_without_mfa"],
            report["users_without_mfa"],
            ["id", "email", "role", "created_at"],
            capped="users_without_mfa" in capped,
        )
    )
    out.print(
        _table(
            "Locked accounts",
            t["locked_accounts"],
            report["locked_accounts"],
            ["id", "email", "scope", "locked_until", "failed_login_attempts"],
            capped="locked_accounts" in capped,
        )
    )
    out.print(
        _table(
            "Suspicious logins (more than 5 failures in 24 h)",
            t["suspicious_logins"],
            report["suspicious_logins"],
            ["email", "failed_attempts", "distinct_ips", "last_failed_at"],
            capped="suspicious_logins" in capped,
        )
    )
    out.print(
        _table(
            "Sessions from unusual locations",
            t["unusual_locations"],
            report["unusual_locations"],
            ["email", "location", "usual_locations", "ip_address", "device_name", "created_at"],
            capped="unusual_locations" in capped,
        )
    )


async def verify(settings: Settings) -> tuple[int, int | None]:
    bx = Bastion.create(settings)
    try:
        return await report_flow.verify_audit_chain(bx)
    finally:
        await bx.close()
