#!/usr/bin/env python3
"""Bastion's benchmark: one command, every figure a ratio measured side by side.

    python3 bench/run.py            # everything (about 10 minutes; growth fills once)
    python3 bench/run.py --quick    # a subset in about a minute
    python3 bench/run.py --only session,login --seconds 2

Servers are real processes on this machine (``bastion serve``, and uvicorn with the same
settings for the comparison apps); the load comes from wrk (Debian's package) with Lua
scripts. Each comparison runs its variants one after another, in rounds whose order
rotates, and reports the median; ratios come from the same round. Besides requests per
second and p99, it reports each variant's CPU time per request (server processes plus
their PostgreSQL backends), which other load on the machine disturbs much less.

Standard library only: it runs under any Python 3.11. Bastion and the bare app run from
the project's ``.venv``; FastAPI Users runs from ``bench/.venv``, created here from
``bench/requirements.txt`` (pinned) the first time. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import (  # noqa: E402
    PG,
    Server,
    port_open,
)

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
MAIN_BIN = ROOT / ".venv" / "bin"
BENCH_VENV = BENCH / ".venv"
WRK = shutil.which("wrk") or "/usr/bin/wrk"

# The floors of issue 10 (ratios; "min" = at least, "max" = at most).
TARGETS = {
    "session_sqlite": 0.6,
    "session_pg": 0.5,
    "vs_fastapi_users": 2.0,
    "login_vs_argon2": 0.9,
    "session_p99_during_logins_ms": 50.0,
    "refresh_pg": 0.15,
    "growth": 1.5,
    "idle_rss_mb": 120.0,
    "rss_growth": 0.10,
}


# ---------------------------------------------------------------------------- load


@dataclass
class Run:
    rps: float = 0.0
    p50: float = 0.0  # ms
    p99: float = 0.0  # ms
    requests: int = 0
    bad: int = 0  # non-2xx or socket errors
    cpu_us: float = 0.0  # CPU microseconds per request, server side
    non2xx: int = 0
    timeouts: int = 0


def _ms(text: str) -> float:
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)


def wrk(
    url: str,
    seconds: float,
    conns: int,
    headers: dict[str, str] | None = None,
    script: Path | None = None,
    env: dict[str, str] | None = None,
) -> Run:
    cmd = [WRK, "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "5s"]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run(
        [*cmd, url], capture_output=True, text=True, env={**os.environ, **(env or {})}
    ).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> Run:
    run = Run()
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            run.rps = float(parts[1])
        elif len(parts) == 2 and parts[0] in ("50%", "99%"):
            setattr(run, "p50" if parts[0] == "50%" else "p99", _ms(parts[1]))
        elif "requests in" in line:
            run.requests = int(parts[0])
        elif line.strip().startswith("Non-2xx"):
            run.bad += int(parts[-1])
            run.non2xx += int(parts[-1])
        elif line.strip().startswith("Socket errors"):
            run.bad += sum(int(p.strip(",")) for p in parts[3::2])
            run.timeouts += int(parts[-1])
    if run.requests and run.bad:
        # Only good answers count: a failing endpoint is not a fast one.
        run.rps *= max(0, run.requests - run.bad) / run.requests
    return run


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total


TICK = os.sysconf("SC_CLK_TCK")


def measure(server: Server, load: Callable[[], Run]) -> Run:
    pids = server.cpu_pids()
    before = cpu_ticks(pids)
    run = load()
    used = cpu_ticks(pids) - before
    if run.requests:
        run.cpu_us = used / TICK * 1e6 / run.requests
    return run


@dataclass
class Variant:
    name: str
    server: Server
    load: Callable[[float], Run]
    runs: list[Run] = field(default_factory=list)

    def warn_bad(self) -> None:
        bad = sum(r.bad for r in self.runs)
        if bad:
            total = sum(r.requests for r in self.runs)
            print(
                f"   note: {self.name}: {bad} of {total:,} answers bad "
                f"({sum(r.non2xx for r in self.runs)} non-2xx, "
                f"{sum(r.timeouts for r in self.runs)} timeouts over 5 s; not counted in req/s)",
                flush=True,
            )
            for line in self.server.error_lines()[-3:]:
                print(f"     server log: {line[:300]}", flush=True)

    def med(self, attr: str) -> float:
        values = [getattr(r, attr) for r in self.runs if r.requests]
        return statistics.median(values) if values else 0.0


def machine_ticks() -> list[int]:
    """The machine's CPU ticks so far (/proc/stat): user, nice, system, idle, iowait, irq,
    softirq, steal."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]


def machine_busy() -> tuple[int, int]:
    """The machine's busy and total ticks so far (idle and iowait are idle)."""
    ticks = machine_ticks()
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def settle(quiet: float = 0.25, step: float = 0.1, limit: float = 2.0) -> float:
    """Wait until the machine is nearly idle (a ``step`` with under ``quiet`` of its CPU
    busy), at most ``limit`` seconds; returns the seconds waited.

    When wrk stops, a server still finishes the requests it had accepted: after a
    login run, 0.2-0.3 s of both cores hashing logins nobody waits for. Without this,
    that tail ran in the next variant's window (about 5 % of a 5 s login window), so
    each variant paid for the one before it."""
    if not Path("/proc/stat").exists():
        return 0.0
    start = time.monotonic()
    busy0, total0 = machine_busy()
    while time.monotonic() - start < limit:
        time.sleep(step)
        busy1, total1 = machine_busy()
        if busy1 - busy0 < quiet * max(1, total1 - total0):
            break
        busy0, total0 = busy1, total1
    return time.monotonic() - start


def side_by_side(variants: list[Variant], rounds: int, seconds: float) -> None:
    """Run each variant once per round, rotating the order so that no variant always
    goes first (or last) while the machine's other load comes and goes; each starts
    on a quiet machine (``settle``)."""
    for r in range(rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for v in order:
            settle()
            v.runs.append(measure(v.server, lambda v=v: v.load(seconds)))  # type: ignore[misc]


def ratio(a: Variant, b: Variant, attr: str = "rps") -> float:
    """Median over rounds of a/b, each pair from the same round."""
    pairs = [
        getattr(x, attr) / getattr(y, attr)
        for x, y in zip(a.runs, b.runs, strict=False)
        if getattr(y, attr) and x.requests
    ]
    return statistics.median(pairs) if pairs else 0.0


# ---------------------------------------------------------------------------- report


class Table:
    def __init__(self, title: str, columns: list[str]) -> None:
        self.title, self.columns, self.rows = title, columns, []  # type: ignore[var-annotated]

    def add(self, *cells: Any) -> None:
        self.rows.append([c if isinstance(c, str) else f"{c:,.2f}" for c in cells])

    def render(self) -> str:
        widths = [
            max(len(str(x)) for x in [h, *(r[i] for r in self.rows)])
            for i, h in enumerate(self.columns)
        ]
        line = "| " + " | ".join(h.ljust(w) for h, w in zip(self.columns, widths, strict=True))
        out = [f"\n### {self.title}\n", line + " |"]
        out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for r in self.rows:
            out.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        return "\n".join(out)


def verdict(value: float, floor: float, higher_is_better: bool = True) -> str:
    if not value:
        return "n/a"
    ok = value >= floor if higher_is_better else value <= floor
    return "ok" if ok else "MISSED"


# ---------------------------------------------------------------------------- venv


def ensure_bench_venv() -> Path | None:
    """bench/.venv from bench/requirements.txt (pinned); rebuilt when the file changes."""
    req = BENCH / "requirements.txt"
    stamp = BENCH_VENV / ".requirements.sha256"
    digest = hashlib.sha256(req.read_bytes()).hexdigest()
    py = BENCH_VENV / "bin" / "python"
    if py.exists() and stamp.exists() and stamp.read_text() == digest:
        return py
    print("creating bench/.venv from bench/requirements.txt ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "-r", str(req)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except subprocess.CalledProcessError:
        print("warning: could not build bench/.venv; FastAPI Users is skipped", flush=True)
        return None
    stamp.write_text(digest)
    return py


# ---------------------------------------------------------------------------- main


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}; "
        f"load average at start {load[0]:.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a subset in about a minute")
    p.add_argument("--only", default="", help="comma list: session,login,refresh,growth,memory")
    p.add_argument("--seconds", type=float, default=0, help="seconds per measurement")
    p.add_argument("--rounds", type=int, default=0, help="rounds per comparison")
    p.add_argument("--no-fastapi-users", action="store_true", help="skip FastAPI Users")
    p.add_argument("--growth-rows", type=int, default=10_000_000, help="large growth table")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = p.parse_args(argv)

    if not Path(WRK).exists():
        print("error: wrk is missing (apt-get install -y wrk)", file=sys.stderr)
        return 2
    if not (MAIN_BIN / "bastion").exists():
        print("error: the project's .venv is missing (python3 dev.py setup)", file=sys.stderr)
        return 2
    groups = set(args.only.split(",")) if args.only else set()
    quick = args.quick
    seconds = args.seconds or (1.5 if quick else 2.0)
    rounds = args.rounds or (1 if quick else 2)
    want = (lambda g: g in groups) if groups else (lambda g: not quick or g in ("session", "login"))

    from scenarios import Context, growth, logins, memory, refresh, sessions

    have_pg = port_open(*PG)
    have_redis = port_open("127.0.0.1", 6379)
    fau_py = None if args.no_fastapi_users else ensure_bench_venv()
    print(f"Machine: {machine()}", flush=True)
    print(
        f"Command: python3 bench/run.py {' '.join(argv if argv is not None else sys.argv[1:])}"
        f"  ({seconds:g} s per measurement, {rounds} round(s); wrk -t1)",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="bastion-bench-"))
    ctx = Context(
        tmp=tmp,
        seconds=seconds,
        rounds=rounds,
        quick=quick,
        have_pg=have_pg,
        have_redis=have_redis,
        fau_py=fau_py,
        growth_rows=args.growth_rows,
    )
    tables: list[Table] = []
    results: dict[str, Any] = {}
    started = time.monotonic()
    try:
        for name, fn in (
            ("session", sessions),
            ("login", logins),
            ("refresh", refresh),
            ("growth", growth),
            ("memory", memory),
        ):
            if not want(name):
                continue
            t0 = time.monotonic()
            print(f"-- {name} ...", flush=True)
            tables.extend(fn(ctx, results))
            print(f"   ({time.monotonic() - t0:.0f} s)", flush=True)
    finally:
        ctx.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    for t in tables:
        print(t.render())
    print(f"\nTotal time {time.monotonic() - started:.0f} s.")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
