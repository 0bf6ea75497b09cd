"""The ``bastion`` command (SPEC §1). Bad arguments: one line on stderr, exit status 2."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from bastion.settings import ConfigError, Settings, load_settings

app = typer.Typer(
    name="bastion",
    help="Bastion authentication server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
T = TypeVar("T")


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"error: {message}", markup=False)
    raise typer.Exit(code)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        fail(str(exc))


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def migrate_or_exit(settings: Settings) -> None:
    from bastion.store.migrate import upgrade

    try:
        upgrade(settings.database_url)
    except Exception as exc:  # noqa: BLE001 - report in one line, never a traceback
        fail(f"cannot migrate the database: {type(exc).__name__}: {str(exc).splitlines()[0]}", 1)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
    workers: int = typer.Option(1, min=1, max=64, help="Worker processes."),
) -> None:
    """Apply migrations and start the server."""
    import uvicorn

    settings = settings_or_exit()
    migrate_or_exit(settings)
    _ = settings.root_secret  # generate the development key once, before workers fork
    err.print(f"Bastion listening on http://{host}:{port} (public URL {settings.base_url})")
    # Worker processes read this when they start, before any thread exists: one malloc
    # arena, so that Argon2's 19 MiB blocks can be returned when idle (runtime.py).
    os.environ.setdefault("MALLOC_ARENA_MAX", "1")
    from bastion.web import serving

    spread = workers > 1 and serving.available()  # a socket per worker: all get logins
    if spread and not settings.hash_threads:
        from bastion.runtime import threads_per_worker

        # The cores shared out among the workers (runtime.py), not one thread per core each.
        os.environ["BASTION_HASH_THREADS"] = str(threads_per_worker(workers))
    options: dict[str, Any] = {
        "factory": True,
        "host": host,
        "port": port,
        "workers": workers,
        "proxy_headers": False,  # X-Forwarded-For is handled by BASTION_TRUSTED_PROXIES
        "server_header": False,
        "log_level": "warning",
        "access_log": False,
    }
    if spread:
        # A socket per worker, so that connections are spread over all of them.
        serving.run_workers(uvicorn.Config("bastion.web.app:app_from_env", **options))
    else:
        uvicorn.run("bastion.web.app:app_from_env", **options)


@app.command()
def migrate() -> None:
    """Apply database migrations and exit."""
    settings = settings_or_exit()
    migrate_or_exit(settings)
    err.print("migrations applied")


@app.command("create-user")
def create_user(
    email: str = typer.Option(..., "--email", help="Email address."),
    name: str | None = typer.Option(None, "--name", help="Display name."),
    role: str | None = typer.Option(None, "--role", help="Role (default BASTION_DEFAULT_ROLE)."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from stdin."
    ),
) -> None:
    """Create a user with a verified email and print its id."""
    from bastion.cli_ops import create_user as do_create

    settings = settings_or_exit()
    role = role or settings.default_role
    if role not in settings.roles:
        fail(f"unknown role {role!r} (known: {', '.join(settings.roles)})")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            fail("passwords do not match")
    migrate_or_exit(settings)
    try:
        user_id = run(do_create(settings, email, name, role, password))
    except ValueError as exc:
        fail(str(exc))
    typer.echo(user_id)


@app.command()
def unlock(email: str = typer.Argument(..., help="Email of the account to unlock.")) -> None:
    """Clear an account's lockout (anonymous and device counters); audited."""
    from bastion.flows.context import RequestContext
    from bastion.flows.errors import NotFound
    from bastion.flows.unlock import unlock_email
    from bastion.runtime import Bastion

    settings = settings_or_exit()
    migrate_or_exit(settings)

    async def go() -> bool:
        bx = Bastion.create(settings)
        try:
            return await unlock_email(bx, RequestContext(), email)
        finally:
            await bx.close()

    try:
        was_locked = run(go())
    except NotFound as exc:
        fail(exc.message)
    typer.echo(f"unlocked {email.strip().lower()}" + ("" if was_locked else " (was not locked)"))


@app.command()
def housekeeping() -> None:
    """Delete expired sessions, one-time tokens, rate-limit windows, old
    suspicious-email marks, and login attempts and finished mail past their retention,
    now (the server does it every HOUSEKEEPING_INTERVAL s)."""
    from bastion.flows.housekeeping import sweep
    from bastion.runtime import Bastion

    settings = settings_or_exit()
    migrate_or_exit(settings)

    async def go() -> dict[str, int]:
        bx = Bastion.create(settings)
        try:
            return await sweep(bx)
        finally:
            await bx.close()

    deleted = run(go())
    typer.echo(", ".join(f"{name}: {n}" for name, n in deleted.items()))


@app.command()
def outbox(
    show: int | None = typer.Option(None, "--show", min=1, help="Print one message in full."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List pending and failed mail; --show ID prints one message."""
    from bastion.mail import report

    settings = settings_or_exit()
    migrate_or_exit(settings)
    rows = run(report.fetch(settings, show))
    if show is None:
        report.print_list(rows, as_json)
    elif not rows:
        fail(f"no message with id {show}")
    else:
        report.print_one(rows[0], as_json)


users_app = typer.Typer(help="Inspect users.", no_args_is_help=True)
app.add_typer(users_app, name="users")


@users_app.command("list")
def users_list(
    q: str | None = typer.Option(None, "--q", "-q", help="Search email and name (substring)."),
    role: str | None = typer.Option(None, "--role", help="Only users with this role."),
    limit: int = typer.Option(50, "--limit", min=1, max=100, help="Users per page."),
    cursor: str | None = typer.Option(None, "--cursor", help="Continue after a previous page."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List users, oldest first (a page at a time)."""
    from bastion import cli_admin
    from bastion.flows.errors import InvalidRequest

    settings = settings_or_exit()
    if role is not None and role not in settings.roles:
        fail(f"unknown role {role!r} (known: {', '.join(settings.roles)})")
    migrate_or_exit(settings)
    try:
        page = run(cli_admin.fetch_users(settings, q, role, limit, cursor))
    except InvalidRequest:
        fail("invalid --cursor")
    cli_admin.print_users(page, as_json)


@app.command()
def audit(
    verify: bool = typer.Option(False, "--verify", help="Check the audit hash chain."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    limit: int = typer.Option(100, "--limit", min=1, max=1000, help="Rows per list."),
) -> None:
    """Print the security report; --verify checks the audit chain instead (exit 1 when
    an event was edited or deleted)."""
    from bastion import cli_admin

    settings = settings_or_exit()
    migrate_or_exit(settings)
    if verify:
        count, broken = run(cli_admin.verify(settings))
        if broken is None:
            typer.echo(f"ok: {count} events")
            return
        typer.echo(
            f"broken: event {broken} does not match the chain "
            f"(it was edited, or the event before it was deleted)"
        )
        raise typer.Exit(1)
    cli_admin.print_report(run(cli_admin.fetch_report(settings, limit)), as_json)


keys_app = typer.Typer(help="JWT signing keys (SPEC §8).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("rotate")
def keys_rotate(
    alg: str = typer.Option("EdDSA", "--alg", help="EdDSA (Ed25519, default) or ES256."),
) -> None:
    """Add a signing key that signs from now on and print its kid; the previous key
    stays published in the JWKS until the tokens it signed have expired."""
    from bastion.core.jwt import ALGORITHMS
    from bastion.flows import keys

    if alg not in ALGORITHMS:
        fail(f"unknown algorithm {alg!r} (use one of {', '.join(ALGORITHMS)})")
    settings = settings_or_exit()
    migrate_or_exit(settings)
    done = run(keys.rotate_in_new_db(settings, alg))
    retired = ", ".join(done.retired) or "none"
    err.print(
        f"new signing key {done.kid} ({done.alg}); retired: {retired}, published until "
        f"{done.published_until:%Y-%m-%d %H:%M:%S} UTC; running servers switch within "
        f"{int(keys.REFRESH_INTERVAL)} s",
        markup=False,
    )
    typer.echo(done.kid)


@keys_app.command("list")
def keys_list() -> None:
    """List signing keys: signing, published (retired, tokens may live) or expired."""
    from bastion.flows import keys

    settings = settings_or_exit()
    migrate_or_exit(settings)
    for row in run(keys.list_in_new_db(settings)):
        retired = f"{row['retired_at']:%Y-%m-%d %H:%M:%S}" if row["retired_at"] else "-"
        typer.echo(
            f"{row['kid']}  {row['alg']:<6} {row['state']:<9} "
            f"created {row['created_at']:%Y-%m-%d %H:%M:%S}  retired {retired}"
        )


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        err.print("error: aborted", markup=False)
        sys.exit(2)
    except ConfigError as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click's UsageError family, vendored by typer
        if type(exc).__name__ == "NoArgsIsHelpError" and getattr(exc, "ctx", None):
            err.print(exc.ctx.get_help(), markup=False)  # type: ignore[attr-defined]
            sys.exit(2)
        if type(exc).__name__ in _USAGE_ERRORS or hasattr(exc, "format_message"):
            # One line, not click's usage block (SPEC §1).
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            err.print(f"error: {message}", markup=False)
            sys.exit(2)
        raise
    sys.exit(code if isinstance(code, int) else 0)


_USAGE_ERRORS = {
    "UsageError",
    "BadParameter",
    "MissingParameter",
    "NoSuchOption",
    "BadOptionUsage",
    "BadArgumentUsage",
    "NoArgsIsHelpError",
}
