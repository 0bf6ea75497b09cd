"""`bastion create-user`, `migrate` and argument errors (SPEC §1)."""

from __future__ import annotations

import re

from tests.support import STRONG, Server, login, unique_email


def test_create_user_prints_id_and_user_can_log_in(server: Server) -> None:
    email = unique_email("cli")
    out = server.cli(
        "create-user",
        "--email",
        email,
        "--name",
        "Cli User",
        "--role",
        "editor",
        "--password-stdin",
        stdin=STRONG + "\n",
    )
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"[0-9a-f]{32}\n", out.stdout)
    with server.client() as c:
        r = login(c, email)
        assert r.status_code == 200
        user = r.json()["user"]
        assert user["role"] == "editor" and user["email_verified"] is True
        assert user["permissions"] == ["read", "write", "delete"]


def test_create_user_unknown_role_is_bad_argument(server: Server) -> None:
    out = server.cli(
        "create-user",
        "--email",
        unique_email(),
        "--role",
        "wizard",
        "--password-stdin",
        stdin=STRONG + "\n",
    )
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1
    assert "wizard" in out.stderr


def test_create_user_duplicate_and_weak(server: Server) -> None:
    email = unique_email()
    assert (
        server.cli(
            "create-user", "--email", email, "--password-stdin", stdin=STRONG + "\n"
        ).returncode
        == 0
    )
    dup = server.cli("create-user", "--email", email, "--password-stdin", stdin=STRONG + "\n")
    assert dup.returncode == 2 and "exists" in dup.stderr
    weak = server.cli("create-user", "--email", unique_email(), "--password-stdin", stdin="weak\n")
    assert weak.returncode == 2 and "weak password" in weak.stderr


def test_bad_arguments_one_line_exit_2(server: Server) -> None:
    for args in (["create-user"], ["no-such-command"], ["serve", "--port", "abc"]):
        out = server.cli(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_invalid_configuration_stops_with_one_line(server: Server) -> None:
    env_backup = dict(server.env)
    try:
        server.env["BASTION_LOCKOUT_THRESHOLD"] = "many"
        out = server.cli("migrate")
        assert out.returncode == 2
        assert out.stderr.strip() == (
            "error: invalid BASTION_LOCKOUT_THRESHOLD: Input should be a valid integer, "
            "unable to parse string as an integer"
        )
        server.env["BASTION_LOCKOUT_THRESHOLD"] = "5"
        server.env["BASTION_DEFAULT_ROLE"] = "ghost"
        out = server.cli("migrate")
        assert out.returncode == 2 and "DEFAULT_ROLE" in out.stderr
    finally:
        server.env.clear()
        server.env.update(env_backup)


def test_migrate_is_idempotent(server: Server) -> None:
    assert server.cli("migrate").returncode == 0
    assert server.cli("migrate").returncode == 0
