"""Processes and HTTP for the benchmark (standard library only)."""

from __future__ import annotations

import http.client as httpclient
import json
import os
import secrets
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG = ("127.0.0.1", 5432)
REDIS_URL = "redis://127.0.0.1:6379/0"
STRONG = "Correct-Horse-9!"


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def psql(sql: str, db: str = "postgres") -> str:
    return subprocess.run(
        ["psql", "-h", PG[0], "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def fresh_pg_database(prefix: str) -> str:
    name = f"{prefix}_{secrets.token_hex(4)}"
    psql(f"CREATE DATABASE {name}")
    return name


def drop_pg_database(name: str) -> None:
    psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )
    psql(f"DROP DATABASE IF EXISTS {name}")


def http(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    form: bool = False,
) -> tuple[int, Any, dict[str, str]]:
    """One request; returns status, the JSON body (or None) and the cookies set."""
    conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=60)
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        if form:
            data = urllib.parse.urlencode(body).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    raw = resp.read()
    cookies = {}
    for name, value in resp.getheaders():
        if name.lower() == "set-cookie":
            k, _, v = value.split(";", 1)[0].partition("=")
            cookies[k.strip()] = v.strip()
    conn.close()
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = None
    return resp.status, parsed, cookies


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def descendants(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Server:
    """A server process (``bastion serve`` or uvicorn) listening on a free port."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        *,
        cwd: Path,
        env: dict[str, str] | None = None,
        health: str = "/healthz",
        port: int | None = None,
        pg_db: str | None = None,
        workers: int = 1,
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self.cmd = [c.replace("{port}", str(self.port)) for c in cmd]
        self.cwd = cwd
        self.env = {**os.environ, **(env or {})}
        self.health = health
        self.pg_db = pg_db
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = cwd / f"{name.replace(' ', '_').replace('/', '_')}-{self.port}.log"
        self.pg_pids: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        self.cwd.mkdir(parents=True, exist_ok=True)
        log = open(self.log, "ab")  # noqa: SIM115 - lives as long as the process
        # A session of its own, as a service has (systemd gives each unit its own
        # cgroup): in the bench's session, Linux's autogroup scheduling put the servers
        # in one CPU group with the load generator, and session checks during logins
        # on PostgreSQL stalled for 100-650 ms a few times a minute (docs/performance.md).
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait(self, timeout: float = 90) -> Server:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            try:
                if http(self.port, "GET", self.health)[0] == 200:
                    if len(self.worker_pids()) >= self.workers:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text()[-3000:]}")

    def pids(self) -> list[int]:
        return descendants(self.proc.pid) if self.proc else []

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the server itself with one worker, the
        spawned workers with several."""
        if self.proc is None:
            return []
        if self.workers == 1:
            return [self.proc.pid]
        out = []
        for pid in self.pids()[1:]:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline:
                out.append(pid)
        return out

    def refresh_pg_pids(self) -> None:
        """PostgreSQL backends serving this server's database: their CPU counts too."""
        if self.pg_db:
            try:
                rows = psql(f"SELECT pid FROM pg_stat_activity WHERE datname = '{self.pg_db}'")
            except subprocess.CalledProcessError:  # e.g. connections exhausted: keep old
                return
            self.pg_pids = [int(x) for x in rows.split()]

    def cpu_pids(self) -> list[int]:
        return self.pids() + self.pg_pids

    def error_lines(self) -> list[str]:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return []
        return [
            line
            for line in text.splitlines()
            if '"level": "error"' in line or "Traceback" in line or "Error" in line[:40]
        ]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
