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


def _resident_kib(address: int) -> int:
    """Rss of the mapping holding ``address`` (/proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(" ", 1)[0]
        if "-" in head and ":" not in head:
            start, end = (int(x, 16) for x in head.split("-"))
            inside = start <= address < end
        elif inside and line.startswith("Rss:"):
            return int(line.split()[1])
    raise AssertionError("no such mapping")


def test_hashing_memory_is_given_back_when_hashing_pauses() -> None:
    """HashMemory: after IDLE_SECONDS without a hash, the hashing threads' buffers
    (core/argon2_memory.py) hold no pages; while hashes keep coming, they stay."""
    from _argon2_cffi_bindings import ffi

    from bastion.core import argon2_memory
    from bastion.core.passwords import Hasher
    from bastion.runtime import HashMemory

    if not Path("/proc/self/smaps").exists():
        pytest.skip("reads /proc/self/smaps (Linux)")
    hasher = Hasher()
    stored = hasher.hash("Correct-Horse-9!")
    buffers: list[int] = []

    def verify() -> None:
        assert hasher.verify(stored, "Correct-Horse-9!")
        buffers.append(int(ffi.cast("uintptr_t", argon2_memory._local.buffer.address)))

    async def run() -> tuple[int, int]:
        memory = HashMemory()
        memory.IDLE_SECONDS = 0.3
        worker = threading.Thread(target=verify)
        worker.start()
        worker.join()
        memory.hashed()
        await asyncio.sleep(0.1)
        kept = _resident_kib(buffers[0])
        await asyncio.sleep(0.5)
        return kept, _resident_kib(buffers[0])

    kept, released = asyncio.run(run())
    assert kept >= 16 * 1024  # the 19 MiB Argon2id blocks, still there
    assert released < 1024
