"""Where a login's CPU goes, per thread: the measurement behind docs/performance.md
("Where the floor is missed").

Starts ``bastion serve`` as bench/run.py does (SQLite in a temporary directory, or a
fresh PostgreSQL database; ``bare``: bench/bare_app.py, the login with nothing but
HTTP, JSON and the hash, for comparison), registers a few users, drives logins with the bench's wrk
script, and reads ``/proc/<pid>/task/*/stat`` of the workers and of every PostgreSQL
backend before and after, plus ``/proc/stat`` for the whole machine. Prints the CPU
per login of each group: event loops (a worker's main thread), Argon2id threads,
other threads (the SQLite writer), PostgreSQL processes. Linux only.

    python3 bench/login_threads.py sqlite --workers 2 --seconds 10
    python3 bench/login_threads.py pg --workers 2 --seconds 10
    python3 bench/login_threads.py bare --workers 2 --seconds 10
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

from run import machine_ticks, settle, wrk
from scenarios import LOGIN_LUA, Context, register


def thread_ticks(pids: list[int]) -> dict[tuple[int, int], tuple[str, int, int, int]]:
    """(pid, tid) -> (command name, user ticks, system ticks, nice value)."""
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
            out[(pid, int(tid))] = (name, int(fields[11]), int(fields[12]), int(fields[16]))
    return out


def postgres_pids() -> list[int]:
    found = subprocess.run(["pgrep", "-f", "postgres:"], capture_output=True, text=True)
    return [int(x) for x in found.stdout.split()]


def group_of(key: tuple[int, int], name: str, nice: int, bare: bool) -> str:
    pid, tid = key
    if name.startswith("postgres"):
        return "PostgreSQL processes"
    if pid == tid:
        return "event loops (main threads)"
    if bare:  # bare_app.py: its only other threads hash, at the default priority
        return "Argon2id threads (bare app)"
    # Argon2id threads run at nice 10 (bastion/runtime.py); the rest is the SQLite
    # writer and the default executor.
    return "Argon2id threads (nice 10)" if nice > 0 else "other threads (SQLite writer)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("db", choices=["sqlite", "pg", "bare"], help="bare: bench/bare_app.py")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=16)
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bastion-login-threads-"))
    ctx = Context(tmp, args.seconds, 1, False, args.db == "pg", False, None, 0)
    try:
        emails = [f"login{i}@example.com" for i in range(args.workers * 4)]
        if args.db == "bare":  # the same logins, nothing but HTTP, JSON and the hash
            server = ctx.bare(args.workers).wait()
        else:
            server = ctx.bastion(args.db, args.workers).wait()
            for e in emails:
                register(server, e)
        users = ctx.script("users.txt", "\n".join(emails) + "\n")
        lua = ctx.script("login.lua", LOGIN_LUA)
        env = {"BENCH_USERS": str(users)}
        wrk(server.url + "/", 3, args.connections, script=lua, env=env)  # warm-up
        settle()  # the warm-up's accepted logins finish outside the measured window
        pids = server.pids() + postgres_pids()
        m0, t0 = machine_ticks(), thread_ticks(pids)
        run = wrk(server.url + "/", args.seconds, args.connections, script=lua, env=env)
        m1, t1 = machine_ticks(), thread_ticks(pids)
    finally:
        ctx.stop_all()

    logins = run.requests - run.bad
    if logins <= 0:
        raise SystemExit(f"no logins completed ({run.bad} bad answers)")
    groups: dict[str, tuple[int, int]] = {}
    for key, (name, user, system, nice) in t1.items():
        if key in t0:
            group = group_of(key, name, nice, args.db == "bare")
            u, s = groups.get(group, (0, 0))
            groups[group] = (u + user - t0[key][1], s + system - t0[key][2])
    hz = os.sysconf("SC_CLK_TCK")
    print(f"{logins} logins in {args.seconds} s = {logins / args.seconds:.1f}/s "
          f"({args.db}, {args.workers} workers, wrk -c{args.connections})")  # fmt: skip
    per_login = 1000 / hz / logins
    for group, (user, system) in sorted(groups.items(), key=lambda g: -sum(g[1])):
        print(
            f"  {group:30s} {(user + system) * per_login:7.2f} ms CPU per login "
            f"(user {user * per_login:.2f}, system {system * per_login:.2f})"
        )
    names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    split = ", ".join(f"{n} {(b - a) / hz:.2f}" for n, a, b in zip(names, m0, m1, strict=True))
    print(f"  machine, seconds: {split}")
    print("  (hashing threads run at nice 10: the machine's 'nice' seconds are the hashing)")


if __name__ == "__main__":
    main()
