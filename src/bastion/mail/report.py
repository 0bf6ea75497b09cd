"""``bastion outbox``: pending and failed mail for operators (SPEC §1, §11).

Listing shows metadata only; ``--show ID`` prints one message in full (text and HTML
parts), which is how an operator without SMTP reads a reset or verification link.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from bastion.settings import Settings
from bastion.store.db import Database
from bastion.store.tables import outbox

LISTED = ("pending", "sending", "failed")
_META = (
    "id",
    "status",
    "event",
    "recipient",
    "subject",
    "attempts",
    "created_at",
    "next_attempt_at",
    "sent_at",
    "last_error",
)


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _public(row: Any, bodies: bool) -> dict[str, Any]:
    data = {k: _iso(row[k]) for k in _META}
    if bodies:
        data["text_body"] = row["text_body"]
        data["html_body"] = row["html_body"]
    return data


async def fetch(settings: Settings, message_id: int | None = None) -> list[dict[str, Any]]:
    db = Database(settings.database_url)
    try:
        c = outbox.c
        stmt = select(outbox)
        if message_id is not None:
            stmt = stmt.where(c.id == message_id)
        else:
            stmt = stmt.where(c.status.in_(LISTED)).order_by(c.created_at, c.id)
        async with db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [_public(r, bodies=message_id is not None) for r in rows]
    finally:
        await db.dispose()


def _console() -> Console:
    # Piped output is not truncated to 80 columns: recipients must stay greppable.
    width = None if sys.stdout.isatty() else 240
    return Console(width=width, highlight=False, soft_wrap=False)


def print_list(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    console = _console()
    if not rows:
        console.print("No pending or failed mail.")
        return
    table = Table(title=f"Outbox: {len(rows)} pending or failed")
    for name in ("ID", "Status", "Event", "Recipient", "Attempts", "Queued", "Next try"):
        table.add_column(name, no_wrap=True)
    table.add_column("Last error", overflow="fold")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["status"],
            r["event"],
            r["recipient"],
            str(r["attempts"]),
            str(r["created_at"])[:19],
            "-" if r["status"] == "failed" else str(r["next_attempt_at"])[:19],
            r["last_error"] or "",
            style="red" if r["status"] == "failed" else None,
        )
    console.print(table)


def print_one(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(row, indent=2) + "\n")
        return
    lines = [
        f"ID:        {row['id']}",
        f"Status:    {row['status']}",
        f"Event:     {row['event']}",
        f"To:        {row['recipient']}",
        f"Subject:   {row['subject']}",
        f"Attempts:  {row['attempts']}",
        f"Queued:    {row['created_at']}",
    ]
    if row["sent_at"]:
        lines.append(f"Sent:      {row['sent_at']}")
    elif row["status"] != "failed":
        lines.append(f"Next try:  {row['next_attempt_at']}")
    if row["last_error"]:
        lines.append(f"Error:     {row['last_error']}")
    lines += ["", "--- text/plain ---", row["text_body"].rstrip("\n"), ""]
    lines += ["--- text/html ---", row["html_body"].rstrip("\n")]
    # Plain write, not Rich: bodies must come out byte for byte (no markup, no wrapping).
    sys.stdout.write("\n".join(lines) + "\n")
