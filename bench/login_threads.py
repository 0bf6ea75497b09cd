"""Where a login's CPU goes, per thread: the measurement behind docs/performance.md
("Where the floor is missed").

Starts ``bastion serve`` on its own (SQLite in a temporary directory, or a fresh
PostgreSQL database), registers a few users, drives logins with wrk as bench/run.py
does, and reads ``/proc/<pid>/task/*/stat`` of the workers and of every PostgreSQL
backend before and after, plus ``/proc/stat`` for the whole machine. Prints the CPU
per login of each group: event loops (a worker's main thread), Argon2id threads,
other threads (the SQLite writer), PostgreSQL processes. Linux only.

    python3 bench/login_threads.py sqlite --workers 2 --seconds 10
    python3 bench/login_threads.py pg --workers 2 --seconds 10
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from scenarios import LOGIN_LUA

from support import ROOT, STRONG, drop_pg_database, free_port, fresh_pg_database, http


def thread_ticks(pids: list[int]) -> dict[tuple[int, int], tuple[str, int, int]]:
    """(pid, tid) -> (command name, user + system clock ticks, nice value)."""
    out = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except FileNotFoundError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            # fields[0] is stat's 3rd field: utime and stime are the 14th and 15th,
            # nice the 19th.
            out[(pid, int(tid))] = (name, int(fields[11]) + int(fields[12]), int(fields[16]))
    return out


def machine_ticks() -> list[int]:
    """user, nice, system, idle, iowait, irq, softirq, steal."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]


def pgrep(*args: str) -> list[int]:
    found = subprocess.run(["pgrep", *args], capture_output=True, text=True).stdout.split()
    return [int(x) for x in found]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("db", choices=["sqlite", "pg"])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=16)
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bastion-login-threads-"))
    pg_db = fresh_pg_database("bench_threads") if args.db == "pg" else None
    url = f"postgresql://postgres@127.0.0.1:5432/{pg_db}" if pg_db else f"sqlite:///{tmp}/b.db"
    port = free_port()
    env = {
        **os.environ,
        "BASTION_DATABASE_URL": url,
        "BASTION_SECRET_KEY": "bench-secret-key-" + "x" * 32,
        "BASTION_DATA_DIR": str(tmp / "data"),
        "BASTION_RATE_LIMITS": '{"*": [1000000000, 60]}',
        "BASTION_IP_FAILURE_LIMIT": "1000000000",
        "BASTION_LOG_LEVEL": "WARNING",
        "BASTION_BASE_URL": f"http://127.0.0.1:{port}",
    }
    cmd = [str(ROOT / ".venv/bin/bastion"), "serve", "--port", str(port)]
    server = subprocess.Popen(
        [*cmd, "--workers", str(args.workers)],
        env=env,
        cwd=tmp,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                if http(port, "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        emails = [f"login{i}@example.com" for i in range(args.workers * 4)]
        for e in emails:
            http(port, "POST", "/api/auth/register", {"email": e, "password": STRONG})
        (tmp / "users.txt").write_text("\n".join(emails) + "\n")
        (tmp / "login.lua").write_text(LOGIN_LUA)
        wrk_env = {**os.environ, "BENCH_USERS": str(tmp / "users.txt")}

        def wrk(seconds: int) -> str:
            run = subprocess.run(
                ["wrk", "-t2", f"-c{args.connections}", f"-d{seconds}s", "-s",
                 str(tmp / "login.lua"), f"http://127.0.0.1:{port}/"],
                env=wrk_env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            return run.stdout

        wrk(3)  # warm-up
        pids = pgrep("-s", str(server.pid)) + pgrep("-f", "postgres:")
        m0, t0 = machine_ticks(), thread_ticks(pids)
        out = wrk(args.seconds)
        m1, t1 = machine_ticks(), thread_ticks(pids)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
        if pg_db:
            drop_pg_database(pg_db)

    found = re.search(r"(\d+) requests in", out)
    logins = int(found.group(1)) if found else 0
    if not logins:
        raise SystemExit("no logins completed:\n" + out)
    groups: dict[str, int] = {}
    for key, (name, ticks, nice) in t1.items():
        if key not in t0:
            continue
        pid, tid = key
        if name.startswith("postgres"):
            group = "PostgreSQL processes"
        elif pid == tid:
            group = "event loops (main threads)"
        elif nice > 0:
            group = "Argon2id threads (nice 10)"
        else:
            group = "other threads (SQLite writer)"
        groups[group] = groups.get(group, 0) + ticks - t0[key][1]
    hz = os.sysconf("SC_CLK_TCK")
    print(f"{logins} logins in {args.seconds} s = {logins / args.seconds:.1f}/s "
          f"({args.db}, {args.workers} workers, wrk -c{args.connections})")  # fmt: skip
    for group, ticks in sorted(groups.items(), key=lambda g: -g[1]):
        print(f"  {group:28s} {ticks * 1000 / hz / logins:7.2f} ms CPU per login")
    names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    split = ", ".join(f"{n} {(b - a) / hz:.2f}" for n, a, b in zip(names, m0, m1, strict=True))
    print(f"  machine, seconds: {split}")
    print("  (hashing threads run at nice 10: the machine's 'nice' seconds are the hashing)")


if __name__ == "__main__":
    main()
