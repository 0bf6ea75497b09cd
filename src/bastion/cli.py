"""The ``bastion`` command (SPEC §1). Bad arguments: one line on stderr, exit status 2."""

from __future__ import annotations

import asyncio
import getpass
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
    uvicorn.run(
        "bastion.web.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=False,  # X-Forwarded-For is handled by BASTION_TRUSTED_PROXIES
        server_header=False,
        log_level="warning",
        access_log=False,
    )


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
