"""Process-level behaviour of a worker (bastion/runtime.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
