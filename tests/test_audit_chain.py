"""SPEC §11: the audit trail is hash-chained, and ``bastion audit --verify`` detects an
edited or a deleted row, on SQLite and PostgreSQL. The rows are changed straight in the
database (sqlite3 / psql), as someone with database access would."""

from __future__ import annotations

import json
import re

from tests.admin_helpers import create_user, sql
from tests.conftest import ServerFactory
from tests.support import Server, login, register, unique_email


def chain_of_events(srv: Server, n_users: int = 3) -> list[int]:
    for _ in range(n_users):
        email = unique_email("chain")
        with srv.client() as c:
            register(c, email)
            login(c, email, "Wrong-Password-1!")
            login(c, email)
    return [int(r[0]) for r in sql(srv, "SELECT id FROM audit_events ORDER BY id")]


def verify(srv: Server) -> tuple[int, str]:
    r = srv.cli("audit", "--verify")
    return r.returncode, (r.stdout + r.stderr).strip()


def test_audit_verify_ok_on_an_intact_chain(make_server: ServerFactory) -> None:
    srv = make_server()
    assert verify(srv) == (0, "ok: 0 events")
    create_user(srv, "admin")  # the CLI's events chain too
    ids = chain_of_events(srv)
    code, out = verify(srv)
    assert (code, out) == (0, f"ok: {len(ids)} events")


def test_audit_verify_detects_an_edited_row(make_server: ServerFactory) -> None:
    srv = make_server()
    ids = chain_of_events(srv)
    victim = ids[len(ids) // 2]
    sql(srv, "UPDATE audit_events SET ip_address = '203.0.113.9' WHERE id = ?", (victim,))
    code, out = verify(srv)
    assert code == 1, out
    assert re.search(rf"\bevent {victim}\b", out), out


def test_audit_verify_detects_an_edit_with_a_recomputed_hash(make_server: ServerFactory) -> None:
    """Rewriting the edited row's own hash does not help: the next row's link breaks."""
    from bastion.store.audit import event_hash
    from bastion.store.tables import UTCDateTime

    srv = make_server()
    ids = chain_of_events(srv)
    victim = ids[2]
    prev_hash, _action, actor, user, ip, ua, details, created = sql(
        srv,
        "SELECT prev_hash, action, actor_id, user_id, ip_address, user_agent, details,"
        " created_at FROM audit_events WHERE id = ?",
        (victim,),
    )[0]
    dialect = type("D", (), {"name": "sqlite" if srv.database_url.startswith("sqlite") else ""})
    row = {
        "action": "login_failed",
        "actor_id": actor or None,
        "user_id": user or None,
        "ip_address": ip or None,
        "user_agent": ua or None,
        "details": json.loads(details) if details else None,
        "created_at": UTCDateTime().process_result_value(created.replace(" ", "T"), dialect),
    }
    forged = event_hash(prev_hash, row)
    sql(
        srv,
        "UPDATE audit_events SET action = 'login_failed', hash = ? WHERE id = ?",
        (forged, victim),
    )
    code, out = verify(srv)
    assert code == 1, out
    assert re.search(rf"\bevent {ids[3]}\b", out), out


def test_audit_verify_detects_a_deleted_row(make_server: ServerFactory) -> None:
    srv = make_server()
    ids = chain_of_events(srv)
    victim = ids[4]
    sql(srv, "DELETE FROM audit_events WHERE id = ?", (victim,))
    code, out = verify(srv)
    assert code == 1, out
    assert re.search(rf"\bevent {ids[5]}\b", out), out
