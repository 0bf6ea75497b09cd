"""SPEC §1: ``bastion users list`` and ``bastion audit`` (the §11 report as tables, or
JSON), against the database of a running server."""

from __future__ import annotations

import json
import secrets

from tests.admin_helpers import create_user
from tests.support import Server, login, unique_email


def test_users_list_table_and_json(server: Server) -> None:
    tag = "cli" + secrets.token_hex(4)
    ids = [create_user(server, "viewer", f"{tag}-{i}@example.com")[0] for i in range(3)]
    r = server.cli("users", "list", "--q", tag)
    assert r.returncode == 0, r.stderr
    for i in range(3):
        assert f"{tag}-{i}@example.com" in r.stdout
    r = server.cli("users", "list", "--q", tag, "--json", "--limit", "2")
    assert r.returncode == 0, r.stderr
    page = json.loads(r.stdout)
    assert [u["id"] for u in page["users"]] == ids[:2] and page["next_cursor"]
    r = server.cli("users", "list", "--q", tag, "--json", "--cursor", page["next_cursor"])
    assert [u["id"] for u in json.loads(r.stdout)["users"]] == ids[2:]
    r = server.cli("users", "list", "--role", "editor", "--json")
    assert all(u["role"] == "editor" for u in json.loads(r.stdout)["users"])


def test_users_list_bad_arguments_exit_2_with_one_line(server: Server) -> None:
    for args in (
        ["users", "list", "--role", "nope"],
        ["users", "list", "--limit", "0"],
        ["users", "list", "--cursor", "%%%"],
        ["users", "frobnicate"],
        ["audit", "--limit", "x"],
    ):
        r = server.cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert r.stderr.startswith("error:"), r.stderr


def test_audit_prints_the_security_report(server: Server) -> None:
    noisy = unique_email("clinoisy")
    with server.client() as c:
        for _ in range(6):
            login(c, noisy, "Wrong-Password-1!")
    r = server.cli("audit")
    assert r.returncode == 0, r.stderr
    for title in ("Users without MFA", "Locked accounts", "Suspicious logins", "unusual"):
        assert title in r.stdout
    assert noisy in r.stdout
    r = server.cli("audit", "--json", "--limit", "1000")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert {
        "users_without_mfa",
        "locked_accounts",
        "suspicious_logins",
        "unusual_locations",
    } <= set(report)
    assert {"email": noisy, "failed_attempts": 6} in [
        {k: s[k] for k in ("email", "failed_attempts")} for s in report["suspicious_logins"]
    ]


def test_audit_verify_reports_ok_on_the_shared_server(server: Server) -> None:
    r = server.cli("audit", "--verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ok: ") and r.stdout.strip().endswith(" events")
