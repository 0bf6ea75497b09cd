"""The measurements of bench/run.py, one function per group of issue 10's targets.

Each function starts the servers it compares, measures them side by side (run.side_by_side)
and returns tables; figures also go into ``results`` for --json.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from run import (
    BENCH,
    MAIN_BIN,
    TARGETS,
    Run,
    Table,
    Variant,
    measure,
    parse_wrk,
    ratio,
    side_by_side,
    verdict,
    wrk,
)

from support import (
    REDIS_URL,
    STRONG,
    Server,
    drop_pg_database,
    fresh_pg_database,
    http,
    psql,
    rss_mb,
)

LOGIN_SECONDS, LOGIN_ROUNDS = 5.0, 3  # logins: longer windows, more rounds (see logins)
HASH_THREADS = os.cpu_count() or 2  # cores: Bastion's hashing threads in all (bastion/runtime.py)


def hash_threads_per_worker(workers: int) -> int:
    """As `bastion serve --workers N` gives its workers (bastion/runtime.py
    threads_per_worker): the cores shared out, at least one each."""
    return max(1, HASH_THREADS // workers)


LOGIN_LUA = (
    """
local bodies = {}
local i = 0
init = function(args)
  for line in io.lines(os.getenv("BENCH_USERS")) do
    bodies[#bodies + 1] = '{"email":"' .. line .. '","password":"%s"}'
  end
end
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", "/api/auth/login", {["Content-Type"] = "application/json"}, bodies[i])
end
"""
    % STRONG
)

REFRESH_LUA = """
local pool = {}
init = function(args)
  for line in io.lines(os.getenv("BENCH_TOKENS")) do pool[#pool + 1] = line end
end
request = function()
  local t = table.remove(pool, 1) or "exhausted"
  return wrk.format("POST", "/api/auth/token",
    {["Content-Type"] = "application/x-www-form-urlencoded"},
    "grant_type=refresh_token&refresh_token=" .. t)
end
response = function(status, headers, body)
  local t = string.match(body, '"refresh_token"%s*:%s*"([^"]+)"')
  if t then pool[#pool + 1] = t end
end
"""

# Cookie and bearer requests in turn; stops after BENCH_LIMIT responses.
MIX_LUA = """
local n, limit = 0, tonumber(os.getenv("BENCH_LIMIT"))
local cookie, bearer = os.getenv("BENCH_COOKIE"), os.getenv("BENCH_BEARER")
request = function()
  n = n + 1
  if bearer ~= "" and n % 2 == 0 then
    return wrk.format("GET", "/api/auth/session", {["Authorization"] = "Bearer " .. bearer})
  end
  return wrk.format("GET", "/api/auth/session", {["Cookie"] = "bastion_session=" .. cookie})
end
response = function(status, headers, body)
  if n >= limit then wrk.thread:stop() end  -- stops sending; wrk still waits out -d
end
"""


@dataclass
class Context:
    tmp: Path
    seconds: float
    rounds: int
    quick: bool
    have_pg: bool
    have_redis: bool
    fau_py: Path | None
    growth_rows: int
    servers: list[Server] = field(default_factory=list)
    pg_dbs: list[str] = field(default_factory=list)
    n: int = 0

    def script(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def _db(self, kind: str, prefix: str) -> tuple[str, str | None]:
        self.n += 1
        if kind == "sqlite":
            return f"sqlite:///{self.tmp / f'{prefix}-{self.n}.db'}", None
        name = fresh_pg_database(f"bench_{prefix}")
        self.pg_dbs.append(name)
        return f"postgresql://postgres@127.0.0.1:5432/{name}", name

    def bastion(self, db: str, workers: int, redis: bool = False, url: str | None = None) -> Server:
        pg_db = None
        if url is None:
            url, pg_db = self._db(db, "bastion")
        elif url.startswith("postgresql"):
            pg_db = url.rsplit("/", 1)[1]
        env = {
            "BASTION_DATABASE_URL": url,
            "BASTION_SECRET_KEY": "bench-secret-key-" + "x" * 32,
            "BASTION_DATA_DIR": str(self.tmp / f"data-{self.n}"),
            "BASTION_RATE_LIMITS": '{"*": [1000000000, 60]}',
            "BASTION_IP_FAILURE_LIMIT": "1000000000",
            "BASTION_LOG_LEVEL": "WARNING",
            # No sweep of expired rows mid-measurement, and none of the growth databases'
            # rows (their sessions expire 30 days after the fill).
            "BASTION_HOUSEKEEPING_INTERVAL": "0",
        }
        if redis:
            env["BASTION_REDIS_URL"] = REDIS_URL
        name = f"bastion {db} w{workers}{' redis' if redis else ''}"
        s = Server(
            name,
            [str(MAIN_BIN / "bastion"), "serve", "--port", "{port}", "--workers", str(workers)],
            cwd=self.tmp,
            env=env,
            pg_db=pg_db,
            workers=workers,
        )
        s.env["BASTION_BASE_URL"] = s.url
        self.servers.append(s)
        return s.start()

    def _uvicorn(
        self, name: str, py: Path, app: str, workers: int, env: dict[str, str]
    ) -> list[str]:
        # Served as ``bastion serve`` serves Bastion (bastion/cli.py): the same uvicorn
        # settings and, with several workers, a socket per worker (serve_like_bastion.py).
        return [
            str(py), str(BENCH / "serve_like_bastion.py"), app, "--port", "{port}",
            "--workers", str(workers),
        ]  # fmt: skip

    def bare(self, workers: int) -> Server:
        # Its login hashes in as many threads as Bastion's workers do (the cores shared out).
        env = {"BENCH_HASH_THREADS": str(hash_threads_per_worker(workers))}
        cmd = self._uvicorn("bare", MAIN_BIN / "python", "bare_app:app", workers, env)
        s = Server(f"bare w{workers}", cmd, cwd=self.tmp, env=env, health="/json", workers=workers)
        self.servers.append(s)
        return s.start()

    def fastapi_users(self, db: str, workers: int) -> Server | None:
        if self.fau_py is None:
            return None
        url, pg_db = self._db(db, "fau")
        url = url.replace("sqlite:", "sqlite+aiosqlite:").replace(
            "postgresql:", "postgresql+asyncpg:"
        )
        env = {"FAU_DATABASE_URL": url}
        subprocess.run(
            [str(self.fau_py), str(BENCH / "fastapi_users_app.py"), "create-tables"],
            env={**os.environ, **env},
            cwd=self.tmp,
            check=True,
        )
        cmd = self._uvicorn("fau", self.fau_py, "fastapi_users_app:app", workers, env)
        s = Server(
            f"fastapi-users {db} w{workers}",
            cmd,
            cwd=self.tmp,
            env=env,
            pg_db=pg_db,
            workers=workers,
        )
        self.servers.append(s)
        return s.start()

    def stop(self, *servers: Server | None) -> None:
        for s in servers:
            if s is not None:
                s.stop()
                if s in self.servers:
                    self.servers.remove(s)

    def stop_all(self) -> None:
        self.stop(*list(self.servers))
        for name in self.pg_dbs:
            try:
                drop_pg_database(name)
            except subprocess.CalledProcessError:
                pass
        self.pg_dbs.clear()


# ---------------------------------------------------------------------------- helpers


def register(s: Server, email: str) -> dict[str, str]:
    status, body, cookies = http(
        s.port, "POST", "/api/auth/register", {"email": email, "password": STRONG}
    )
    if status != 201:
        raise RuntimeError(f"{s.name}: register answered {status} {body}")
    return cookies


def password_grant(s: Server, email: str) -> dict[str, Any] | None:
    status, body, _ = http(
        s.port,
        "POST",
        "/api/auth/token",
        {"grant_type": "password", "username": email, "password": STRONG},
        form=True,
    )
    return body if status == 200 else None


def warm(v: Variant) -> None:
    v.load(1)
    v.server.refresh_pg_pids()


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}" if x else "n/a"


def session_variants(ctx: Context, db: str, workers: int) -> tuple[list[Variant], list[Server]]:
    c = 32
    bare = ctx.bare(workers)
    main = ctx.bastion(db, workers)
    red = ctx.bastion(db, workers, redis=True) if ctx.have_redis and not ctx.quick else None
    fau = ctx.fastapi_users(db, workers)
    servers = [x for x in (bare, main, red, fau) if x is not None]
    for s in servers:
        s.wait()
    out = [Variant("bare FastAPI JSON", bare, lambda t: wrk(bare.url + "/json", t, c))]
    for s, label in ((main, ""), (red, " +redis")):
        if s is None:
            continue
        cookie = register(s, "bench@example.com")["bastion_session"]
        hdr = {"Cookie": f"bastion_session={cookie}"}
        out.append(
            Variant(
                f"Bastion cookie{label}",
                s,
                lambda t, s=s, hdr=hdr: wrk(s.url + "/api/auth/session", t, c, hdr),  # type: ignore[misc]
            )
        )
        tokens = password_grant(s, "bench@example.com") if s is main else None
        if tokens:
            bh = {"Authorization": f"Bearer {tokens['access_token']}"}
            out.append(
                Variant(
                    f"Bastion bearer{label}",
                    s,
                    lambda t, s=s, bh=bh: wrk(s.url + "/api/auth/session", t, c, bh),  # type: ignore[misc]
                )
            )
    if fau is not None:
        http(fau.port, "POST", "/auth/register", {"email": "b@example.com", "password": STRONG})
        _, body, _ = http(
            fau.port, "POST", "/auth/login", {"username": "b@example.com", "password": STRONG},
            form=True,
        )  # fmt: skip
        fh = {"Authorization": f"Bearer {body['access_token']}"}
        out.append(
            Variant("FastAPI Users /users/me", fau, lambda t: wrk(fau.url + "/users/me", t, c, fh))
        )
    return out, servers


# ---------------------------------------------------------------------------- groups


def sessions(ctx: Context, results: dict[str, Any]) -> list[Table]:
    """Targets 1 and 2: GET /api/auth/session vs a bare endpoint and vs FastAPI Users."""
    t1 = Table(
        "1-2. Session validation: GET /api/auth/session vs a bare FastAPI JSON endpoint "
        "(wrk -c32)",
        ["db", "workers", "variant", "req/s", "p50 ms", "p99 ms", "CPU µs/req",
         "× bare", "× bare (CPU)", "floor", ""],
    )  # fmt: skip
    t2 = Table(
        "2. Bastion GET /api/auth/session vs FastAPI Users GET /users/me (database strategy)",
        ["db", "workers", "Bastion", "req/s", "FastAPI Users req/s", "×", "× (CPU)", "floor", ""],
    )
    dbs = ["sqlite"] + (["pg"] if ctx.have_pg and not ctx.quick else [])
    for db in dbs:
        for workers in (1,) if ctx.quick else (1, 2):
            variants, servers = session_variants(ctx, db, workers)
            for v in variants:
                warm(v)
            side_by_side(variants, ctx.rounds, ctx.seconds)
            bare = variants[0]
            floor = TARGETS["session_sqlite" if db == "sqlite" else "session_pg"]
            fau = next((v for v in variants if v.name.startswith("FastAPI Users")), None)
            for v in variants:
                r = ratio(v, bare) if v is not bare else 1.0
                rc = bare.med("cpu_us") / v.med("cpu_us") if v.med("cpu_us") else 0.0
                bastion = v.name.startswith("Bastion")
                t1.add(
                    db, str(workers), v.name, v.med("rps"), v.med("p50"), v.med("p99"),
                    v.med("cpu_us"), fmt_ratio(r), fmt_ratio(rc),
                    f"≥ {floor}" if bastion else "", verdict(r, floor) if bastion else "",
                )  # fmt: skip
                results[f"session/{db}/w{workers}/{v.name}"] = {
                    "rps": v.med("rps"), "p50_ms": v.med("p50"), "p99_ms": v.med("p99"),
                    "cpu_us": v.med("cpu_us"), "ratio": r, "ratio_cpu": rc,
                    "bad": sum(x.bad for x in v.runs),
                }  # fmt: skip
                if fau is not None and bastion:
                    rf = ratio(v, fau)
                    rfc = fau.med("cpu_us") / v.med("cpu_us") if v.med("cpu_us") else 0.0
                    floor2 = TARGETS["vs_fastapi_users"]
                    t2.add(
                        db, str(workers), v.name.removeprefix("Bastion "), v.med("rps"),
                        fau.med("rps"), fmt_ratio(rf), fmt_ratio(rfc), f"≥ {floor2}",
                        verdict(rf, floor2),
                    )  # fmt: skip
            for v in variants:
                v.warn_bad()
            ctx.stop(*servers)
    return [t1, t2] if ctx.fau_py else [t1]


def argon2_floor(threads: int, seconds: float, bastion: bool = False) -> Run:
    """Bare Argon2id verifies (m=19456, t=2, p=1) in ``threads`` threads for ``seconds``;
    ``bastion``: through Bastion's verify (core/argon2_sodium.py, libsodium) instead of
    argon2-cffi's."""
    out = subprocess.run(
        [str(MAIN_BIN / "python"), str(BENCH / "argon2_floor.py"), str(threads), str(seconds)]
        + (["bastion"] if bastion else []),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    n, elapsed, cpu = int(out[0]), float(out[1]), float(out[2])
    return Run(rps=n / elapsed, requests=n, cpu_us=cpu / n * 1e6 if n else 0.0)


class _NoServer(Server):
    def __init__(self) -> None:  # noqa: D107 - a stand-in: the floor measures itself
        self.pg_pids = []
        self.proc = None

    def cpu_pids(self) -> list[int]:
        return []

    def error_lines(self) -> list[str]:
        return []


BARE_LOGIN = "bare HTTP login (hash only, no database)"
BASTION_VERIFY = "bare argon2id, Bastion's verify (libsodium)"


def logins(ctx: Context, results: dict[str, Any]) -> list[Table]:
    """Target 3: logins vs bare Argon2id, and session p99 while logins saturate the CPU."""
    t = Table(
        "3. Logins (POST /api/auth/login) vs bare Argon2id verify (m=19456, t=2, p=1), "
        "same thread count; session p99 while logins saturate the CPU. The verdict is "
        "against the faster of the two bare verifies (argon2-cffi's, libsodium's: the one "
        "Bastion runs)",
        ["db", "workers", "variant", "threads", "per s", "p99 ms", "× argon2-cffi",
         "× libsodium", "floor", "", "session p99 ms during logins", "floor", ""],
    )  # fmt: skip
    dbs = ["sqlite"] + (["pg"] if ctx.have_pg and not ctx.quick else [])
    workers = 1 if ctx.quick else 2
    threads = hash_threads_per_worker(workers) * workers  # Bastion's hashing threads in all
    # Enough logins in flight to keep every hashing thread busy: the kernel spreads
    # connections over the workers unevenly, so as many connections as threads would
    # leave some threads idle while others queue.
    conns = HASH_THREADS * workers * 4
    users_file = ctx.tmp / "login-users.txt"
    for db in dbs:
        main = ctx.bastion(db, workers)
        red = ctx.bastion(db, workers, redis=True) if ctx.have_redis and not ctx.quick else None
        servers = [s for s in (main, red) if s is not None]
        # The same logins against a server that only parses, hashes and answers (no
        # database): tells the HTTP server's share of the overhead from the database's.
        bare = ctx.bare(workers)
        emails = [f"login{i}@example.com" for i in range(threads * 2)]
        cookies = {}
        bare.wait()
        for s in servers:
            s.wait()
            for e in emails:
                cookies[s.name] = register(s, e)["bastion_session"]
        users_file.write_text("\n".join(emails) + "\n")
        lua = ctx.script("login.lua", LOGIN_LUA)
        env = {"BENCH_USERS": str(users_file)}
        floor = Variant("bare argon2id", _NoServer(), lambda sec: argon2_floor(threads, sec))
        # The same hashes through Bastion's own verify (libsodium: AVX2/AVX-512 where the
        # CPU has them): faster than argon2-cffi's floor, so Bastion's logins against this
        # row show the server's overhead alone.
        own_verify = Variant(
            BASTION_VERIFY, _NoServer(), lambda sec: argon2_floor(threads, sec, bastion=True)
        )
        http_only = Variant(
            BARE_LOGIN,
            bare,
            lambda sec, bare=bare, lua=lua, env=env: wrk(
                bare.url + "/", sec, conns, script=lua, env=env
            ),  # type: ignore[misc]
        )
        variants = [floor, own_verify, http_only] + [
            Variant(
                s.name.split(" ", 2)[-1].replace(f"w{workers}", "login").strip(),
                s,
                lambda sec, s=s, lua=lua, env=env: wrk(
                    s.url + "/", sec, conns, script=lua, env=env
                ),  # type: ignore[misc]
            )
            for s in servers
        ]
        for v in variants[2:]:
            warm(v)
        # A login takes a few hundred milliseconds under this load: short windows hold
        # too few of them (and the floor's threads finish unevenly) to compare closely.
        if ctx.quick:
            side_by_side(variants, ctx.rounds, max(ctx.seconds, 2))
        else:
            side_by_side(variants, max(ctx.rounds, LOGIN_ROUNDS), max(ctx.seconds, LOGIN_SECONDS))
        for v in variants:
            v.warn_bad()
            bastion = v not in (floor, own_verify, http_only)
            during = None
            if bastion:
                during = logins_with_sessions(
                    v.server, cookies[v.server.name], lua, env, conns, ctx
                )
            r = ratio(v, floor) if v is not floor else 1.0
            r_own = ratio(v, own_verify) if v is not own_verify else 1.0
            # Against the faster bare verify: a faster hash is not a smaller overhead.
            worst = min(r, r_own)
            lf, pf = TARGETS["login_vs_argon2"], TARGETS["session_p99_during_logins_ms"]
            t.add(
                db, str(workers), "Bastion " + v.name if bastion else v.name,
                str(threads), v.med("rps"), v.med("p99") if v not in (floor, own_verify) else "",
                fmt_ratio(r), fmt_ratio(r_own), f"≥ {lf}" if bastion else "",
                verdict(worst, lf) if bastion else "",
                f"{during.p99:.1f} ({during.rps:.0f} req/s)" if during else "",
                f"< {pf:g}" if during else "",
                verdict(during.p99, pf, higher_is_better=False) if during else "",
            )  # fmt: skip
            results[f"login/{db}/w{workers}/{v.name}"] = {
                "per_s": v.med("rps"), "ratio": worst, "ratio_to_argon2_cffi": r,
                "ratio_to_own_verify": r_own if bastion else None,
                "session_p99_ms_during": during.p99 if during else None,
                "bad": sum(x.bad for x in v.runs),
            }  # fmt: skip
        ctx.stop(bare, *servers)
    return [t]


def logins_with_sessions(
    s: Server, cookie: str, lua: Path, env: dict[str, str], conns: int, ctx: Context
) -> Run:
    """Logins at full tilt and, at the same time, 4 connections of session checks.

    The session endpoint is warmed first, as every measured variant is (``warm``): its
    first second on a fresh server opens the workers' read connections and runs its
    first statements on each, which put 25-48 ms into the p99 of an otherwise idle
    machine here, and 50-85 ms under logins: a start-up cost, not the steady state
    that the target is about."""
    box: dict[str, Run] = {}
    seconds = max(ctx.seconds, 2)
    session = {"Cookie": f"bastion_session={cookie}"}
    wrk(s.url + "/api/auth/session", 1, 4, session)
    th = threading.Thread(
        target=lambda: box.setdefault(
            "login", wrk(s.url + "/", seconds, conns, script=lua, env=env)
        )
    )
    th.start()
    time.sleep(0.3)
    run = wrk(s.url + "/api/auth/session", seconds - 0.5, 4, session)
    th.join()
    return run


def refresh(ctx: Context, results: dict[str, Any]) -> list[Table]:
    """Target 4: refresh grants (each with a new token) vs the bare endpoint."""
    t = Table(
        "4. Refresh grants (POST /api/auth/token grant_type=refresh_token, a new token "
        "each time; wrk -c16) vs bare FastAPI JSON endpoint",
        ["db", "workers", "variant", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "× bare",
         "× bare (CPU)", "floor", ""],
    )  # fmt: skip
    conns = 16
    plan = [("pg", 2), ("sqlite", 2)] if ctx.have_pg else [("sqlite", 2)]
    lua = ctx.script("refresh.lua", REFRESH_LUA)
    for db, workers in plan:
        bare = ctx.bare(workers)
        main = ctx.bastion(db, workers)
        red = ctx.bastion(db, workers, redis=True) if ctx.have_redis else None
        servers = [x for x in (bare, main, red) if x is not None]
        for s in servers:
            s.wait()
        variants = [
            Variant(
                "bare FastAPI JSON", bare, lambda sec, bare=bare: wrk(bare.url + "/json", sec, 32)
            )
        ]
        for s in (main, red):
            if s is None:
                continue
            register(s, "refresh@example.com")
            if password_grant(s, "refresh@example.com") is None:
                print("   refresh: no token endpoint; skipped")
                ctx.stop(*servers)
                return []

            def load(sec: float, s: Server = s) -> Run:
                # Each run starts from fresh tokens: those in flight when wrk stops are
                # spent without their successors being known. One more than connections:
                # wrk calls request() once at start-up to check it, which takes a token
                # that is never sent (without it one connection starts with none, and
                # the chains then starve one another into "exhausted" 400s).
                path = ctx.tmp / f"tokens-{s.port}.txt"
                with ThreadPoolExecutor(8) as pool:
                    grants = list(
                        pool.map(
                            lambda _: password_grant(s, "refresh@example.com"), range(conns + 1)
                        )
                    )
                path.write_text("\n".join(g["refresh_token"] for g in grants if g) + "\n")
                return wrk(s.url + "/", sec, conns, script=lua, env={"BENCH_TOKENS": str(path)})

            variants.append(Variant("Bastion refresh" + (" +redis" if s is red else ""), s, load))
        for v in variants:
            warm(v)
        side_by_side(variants, ctx.rounds, ctx.seconds)
        floor = TARGETS["refresh_pg"]
        for v in variants:
            r = ratio(v, variants[0]) if v is not variants[0] else 1.0
            rc = variants[0].med("cpu_us") / v.med("cpu_us") if v.med("cpu_us") else 0.0
            ours = v is not variants[0]
            t.add(
                db, str(workers), v.name, v.med("rps"), v.med("p50"), v.med("p99"),
                v.med("cpu_us"), fmt_ratio(r), fmt_ratio(rc),
                f"≥ {floor}" if ours and db == "pg" else "",
                verdict(r, floor) if ours and db == "pg" else "",
            )  # fmt: skip
            results[f"refresh/{db}/w{workers}/{v.name}"] = {
                "rps": v.med("rps"), "p99_ms": v.med("p99"), "ratio": r,
                "bad": sum(x.bad for x in v.runs),
            }  # fmt: skip
            v.warn_bad()
        ctx.stop(*servers)
    return [t]


def memory(ctx: Context, results: dict[str, Any]) -> list[Table]:
    """Target 6: idle RSS per worker, and RSS growth over the second half of a run."""
    total = 20_000 if ctx.quick else 100_000
    t = Table(
        f"6. Memory: RSS per worker idle, and growth over the second half of "
        f"{total:,} requests (cookie and bearer in turn, wrk -c32)",
        ["db", "workers", "idle RSS MB (max worker)", "floor", "", "RSS at half MB",
         "RSS at end MB", "growth", "floor", ""],
    )  # fmt: skip
    plan = [("sqlite", 2)] + ([("pg", 2)] if ctx.have_pg else [])
    lua = ctx.script("mix.lua", MIX_LUA)
    for db, workers in plan:
        s = ctx.bastion(db, workers).wait()
        cookie = register(s, "mem@example.com")["bastion_session"]
        tokens = password_grant(s, "mem@example.com")
        env = {
            "BENCH_COOKIE": cookie,
            "BENCH_BEARER": tokens["access_token"] if tokens else "",
            "BENCH_LIMIT": "200",
        }
        wrk(s.url + "/", 1, 2, script=lua, env=env)
        # Idle: 6 s after the last request, past the 5 s after which a worker trims its
        # malloc heap once hashing pauses (runtime.HashMemory).
        time.sleep(6)
        idle = max(rss_mb(p) for p in s.worker_pids())
        # wrk cannot stop at a count: size each half from a short probe's rate.
        env["BENCH_LIMIT"] = "1000000000"
        probe = wrk(s.url + "/", 2, 32, script=lua, env=env)
        seconds = min(120, max(2, round(total / 2 / max(probe.rps, 1))))
        first = wrk(s.url + "/", seconds, 32, script=lua, env=env)
        half = {p: rss_mb(p) for p in s.worker_pids()}
        second = wrk(s.url + "/", seconds, 32, script=lua, env=env)
        end = {p: rss_mb(p) for p in s.worker_pids()}
        done = probe.requests + first.requests + second.requests
        growth = max((end[p] - half[p]) / half[p] for p in half if p in end)
        fi, fg = TARGETS["idle_rss_mb"], TARGETS["rss_growth"]
        t.add(
            db, str(workers), idle, f"≤ {fi:g}", verdict(idle, fi, higher_is_better=False),
            max(half.values()), max(end.values()), f"{growth:+.1%} ({done:,} req)", f"< {fg:.0%}",
            verdict(growth, fg, higher_is_better=False) if growth > 0 else "ok",
        )  # fmt: skip
        results[f"memory/{db}/w{workers}"] = {
            "idle_rss_mb": idle, "half_mb": list(half.values()), "end_mb": list(end.values()),
            "growth": growth, "requests": done,
        }  # fmt: skip
        ctx.stop(s)
    return [t]


def growth(ctx: Context, results: dict[str, Any]) -> list[Table]:
    from growth import growth_tables

    return growth_tables(ctx, results)


__all__ = ["Context", "growth", "logins", "memory", "refresh", "sessions", "parse_wrk", "measure"]
_ = (sys, psql)
