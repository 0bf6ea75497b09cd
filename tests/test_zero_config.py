"""`bastion serve` with no configuration at all (SPEC §1)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx

from tests.support import BIN, STRONG, TLS, answers_as_bastion, free_port, unique_email


def test_serve_with_zero_configuration(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    proc = subprocess.Popen(
        [str(BIN / "bastion"), "serve", "--port", str(port), "--workers", "2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if answers_as_bastion(httpx.get(url + "/healthz", timeout=1, verify=TLS)):
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        assert (tmp_path / "bastion.db").exists()
        key_file = tmp_path / ".bastion" / "secret_key"
        assert key_file.exists() and len(key_file.read_text().strip()) >= 32
        with httpx.Client(base_url=url, verify=TLS) as c:
            r = c.post("/api/auth/register", json={"email": unique_email(), "password": STRONG})
            assert r.status_code == 201
            assert c.get("/api/auth/session").status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}" in out
    assert "Production must set" in out
    assert STRONG not in out
