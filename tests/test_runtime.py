"""Process-level behaviour of a worker (bastion/runtime.py)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

# Runs in its own interpreter: freezing is once per process, and the test process
# must not have its objects frozen.
WORKER = """
import asyncio, gc, json, time
from bastion.cli import migrate_or_exit
from bastion.settings import load_settings
from bastion.web.app import create_fastapi

settings = load_settings()
migrate_or_exit(settings)
app = create_fastapi(settings)

async def main():
    before = gc.get_freeze_count()
    async with app.router.lifespan_context(app):
        frozen = gc.get_freeze_count()
        start = time.perf_counter()
        gc.collect()
        full_ms = (time.perf_counter() - start) * 1000
        gc.unfreeze()
        start = time.perf_counter()
        gc.collect()
        unfrozen_ms = (time.perf_counter() - start) * 1000
    print(json.dumps({"before": before, "frozen": frozen, "full_ms": full_ms,
                      "unfrozen_ms": unfrozen_ms}))

asyncio.run(main())
"""


def test_startup_objects_are_left_out_of_full_garbage_collections(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    out = subprocess.run(
        [sys.executable, "-c", WORKER],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["before"] == 0
    # The GeoIP table, user-agent rules and modules: tens of thousands of objects that a
    # full collection no longer walks on the event loop.
    assert found["frozen"] > 50_000
    # Same process, same objects: walking them is what a full collection cost before.
    assert found["full_ms"] < found["unfrozen_ms"]


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_hash_keeps_no_memory() -> None:
    """libsodium maps each hash's 19 MiB and unmaps it after (core/argon2_sodium.py):
    a verify leaves the process no larger, however many run."""
    from bastion.core.passwords import Hasher

    if not Path("/proc/self/status").exists():
        pytest.skip("reads /proc/self/status (Linux)")
    hasher = Hasher()
    stored = hasher.hash("Correct-Horse-9!")

    def verify() -> None:
        assert hasher.verify(stored, "Correct-Horse-9!")

    before = _rss_kib()
    workers = [threading.Thread(target=verify) for _ in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert _rss_kib() - before < 8 * 1024  # four hashes' 76 MiB are gone


def test_hash_memory_trims_once_hashing_pauses() -> None:
    """HashMemory: malloc_trim runs after IDLE_SECONDS without a hash, not while hashes
    keep coming (what argon2-cffi computes mallocs its blocks)."""
    from bastion.runtime import HashMemory

    memory = HashMemory()
    if memory.trim is None:
        pytest.skip("no glibc malloc_trim here")
    real, calls = memory.trim, []

    def trim(pad: int) -> int:
        calls.append(pad)
        return int(real(pad))

    memory.trim = trim
    memory.IDLE_SECONDS = 0.3

    async def run() -> tuple[int, int]:
        for _ in range(5):  # a hash every 0.1 s: never idle for 0.3 s
            memory.hashed()
            await asyncio.sleep(0.1)
        busy = len(calls)
        await asyncio.sleep(0.5)
        return busy, len(calls)

    assert asyncio.run(run()) == (0, 1)
