"""Test support: real Bastion server processes on SQLite or PostgreSQL, and helpers.

Servers run as ``bastion serve`` subprocesses, exactly as users run them, and tests talk
to them over HTTP. PostgreSQL tests get a fresh database per server family; under
``CI=true`` an unreachable PostgreSQL or Redis is a failure, not a skip.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_URL = "redis://127.0.0.1:6379/0"
IN_CI = os.environ.get("CI", "").lower() == "true"
STRONG = "Correct-Horse-9!"
# One TLS context for every client the tests make: httpx otherwise builds one per client
# and per ``httpx.get``, loading the whole CA bundle each time (about 45 ms of CPU), and
# the suite makes thousands of clients (each server start polls /healthz ~20 times).
TLS = ssl.create_default_context()


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out by itself (to ``bind`` on port 0, and to
    clients' connections); IANA's 49152 where Linux's setting cannot be read."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152


def free_port() -> int:
    """A free port for a test server, picked at random below the kernel's ephemeral
    range. A port the kernel chose (``bind`` on port 0) is free again once the probe
    closes, and the kernel may give it to whatever binds port 0 next, here or in
    another test process, before the server (a subprocess still starting) binds it: a
    test's JWKS stub, which answers any path, once did, and passed a Bastion's
    readiness check and its first request. Below that range only another
    ``free_port`` call can pick the same port, at random."""
    low = _ephemeral_low()
    pick = secrets.SystemRandom()
    for _ in range(200):
        port = pick.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a crowded range: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def psql(sql: str, db: str = "test") -> None:
    subprocess.run(
        ["psql", "-h", PG_HOST, "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-qc", sql],
        check=True,
        capture_output=True,
    )


@contextmanager
def postgres_database(template: str | None = None) -> Iterator[str]:
    name = "bastion_t_" + secrets.token_hex(6)
    psql(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    try:
        yield f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )
        psql(f"DROP DATABASE IF EXISTS {name}")


@contextmanager
def database(backend: str, tmp: Path, migrated: bool = True) -> Iterator[str]:
    """A fresh database of the backend. ``migrated``: a copy of one migrated once per
    test process, so that the server starting on it finds it at the heads (migrating
    from nothing costs a server start about a second of CPU, a few minutes over the
    suite); tests/test_migrate.py and test_zero_config.py migrate from nothing."""
    if backend == "sqlite":
        path = tmp / ("bastion-" + secrets.token_hex(4) + ".db")
        if migrated:
            shutil.copyfile(_template("sqlite"), path)
        yield f"sqlite:///{path}"
    else:
        with postgres_database(_template("postgres") if migrated else None) as url:
            yield url


_templates: dict[str, str] = {}


def _template(backend: str) -> str:
    """The migrated database that ``database`` copies: a SQLite file (its WAL folded in,
    so that the file alone is the whole database) or a PostgreSQL template database."""
    found = _templates.get(backend)
    if found is not None:
        return found
    from bastion.store.migrate import upgrade

    if backend == "sqlite":
        path = Path(tempfile.mkdtemp(prefix="bastion-template-")) / "template.db"
        upgrade(f"sqlite:///{path}")
        with closing(sqlite3.connect(path)) as con:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        found = str(path)
    else:
        found = "bastion_t_template_" + secrets.token_hex(6)
        psql(f"CREATE DATABASE {found}")
        atexit.register(psql, f"DROP DATABASE IF EXISTS {found}")
        upgrade(f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{found}")
    _templates[backend] = found
    return found


def answers_as_bastion(r: httpx.Response) -> bool:
    """Bastion's /healthz answer, not another server's 200 on the port."""
    try:
        return r.status_code == 200 and r.json() == {"status": "ok"}
    except ValueError:
        return False


class Server:
    """A running ``bastion serve`` process."""

    def __init__(
        self,
        database_url: str,
        workdir: Path,
        env: dict[str, str] | None = None,
        workers: int = 1,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.workdir = workdir
        self.workers = workers
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("BASTION_")},
            "BASTION_DATABASE_URL": database_url,
            "BASTION_SECRET_KEY": "test-secret-key-" + "x" * 32,
            "BASTION_BASE_URL": self.url,
            "BASTION_DATA_DIR": str(workdir / "data"),
            "BASTION_IP_FAILURE_LIMIT": "100000",
            # Many servers run at once in the suite; PostgreSQL allows 100 clients.
            "BASTION_DB_POOL_SIZE": "3",
            "BASTION_RATE_LIMITS": '{"*": [100000, 60]}',
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"server-{self.port}.log"

    def start(self) -> Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [
                str(BIN / "bastion"),
                "serve",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if answers_as_bastion(httpx.get(self.url + "/healthz", timeout=1, verify=TLS)):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not start: " + self.log_path.read_text()[-3000:])

    def stop(self, sig: int | None = None) -> None:
        if self.proc and self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, verify=TLS, **kw)

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "bastion"), *args],
            cwd=self.workdir,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


def register(
    client: httpx.Client,
    email: str | None = None,
    password: str = STRONG,
    name: str | None = "Test User",
) -> httpx.Response:
    email = email or unique_email()
    body: dict[str, Any] = {"email": email, "password": password}
    if name is not None:
        body["name"] = name
    return client.post("/api/auth/register", json=body)


def login(client: httpx.Client, email: str, password: str = STRONG, **kw: Any) -> httpx.Response:
    return client.post("/api/auth/login", json={"email": email, "password": password}, **kw)


def csrf(client: httpx.Client) -> dict[str, str]:
    return {"X-CSRF-Token": client.cookies.get("bastion_csrf") or ""}


def db_query(database_url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one statement directly against the server's database (positional ``$1``
    parameters on PostgreSQL, ``?`` on SQLite) and return the rows."""
    if database_url.startswith("sqlite"):
        import sqlite3

        path = database_url.split("///", 1)[1]
        with sqlite3.connect(path, timeout=15) as conn:
            rows = conn.execute(
                sql.replace("$1", "?").replace("$2", "?").replace("$3", "?"), args
            ).fetchall()
            conn.commit()
        return [tuple(r) for r in rows]

    import asyncpg

    async def go() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(database_url)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return run_async(go())


def run_async(coro: Any) -> Any:
    """asyncio.run, also from a thread that already runs a loop (Playwright's sync API
    keeps one running in the main thread while its fixtures live)."""
    import asyncio
    import concurrent.futures

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
