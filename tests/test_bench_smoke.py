"""The benchmark command (bench/run.py, docs/performance.md) runs and prints its table.

A few seconds of the quick benchmark, not a measurement: the figures themselves are
only meaningful from a full run on a quiet machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"


def test_benchmark_command_prints_a_ratio_table() -> None:
    if shutil.which("wrk") is None:
        if IN_CI:
            pytest.fail("wrk is missing (apt-get install -y wrk)")
        pytest.skip("wrk is missing (apt-get install -y wrk)")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only", "session",
         "--seconds", "1", "--no-fastapi-users"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, result.stderr[-3000:] + out[-3000:]
    assert "Machine:" in out and "Command: python3 bench/run.py" in out
    assert "| db " in out and "× bare" in out
    rows = [line for line in out.splitlines() if line.startswith("| sqlite")]
    assert any("bare FastAPI JSON" in r for r in rows)
    cookie = next(r for r in rows if "Bastion cookie" in r)
    cells = [c.strip() for c in cookie.strip("|").split("|")]
    assert float(cells[3].replace(",", "")) > 0  # requests per second
    assert float(cells[7]) > 0  # the ratio to bare
