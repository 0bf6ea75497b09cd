#!/usr/bin/env python3
"""Bastion's two set-up commands, needing nothing but Python 3.11+.

    python3 dev.py serve [bastion serve options]   start the server (SQLite, zero config)
    python3 dev.py test  [pytest options]          lint, type-check and run the whole suite

Each creates or updates ``.venv`` from the pinned ``requirements.lock`` first, so a
fresh clone needs no other step. Any other first argument runs that ``bastion``
sub-command inside the environment (``python3 dev.py migrate``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".bastion-installed"


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("requirements.lock", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    """Create .venv and install the lock file when it is missing or stale."""
    if sys.version_info < (3, 11):
        sys.exit("Bastion needs Python 3.11 or newer")
    wanted = _fingerprint()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print("dev.py: creating .venv", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    py = str(BIN / "python")
    print("dev.py: installing pinned dependencies", file=sys.stderr)
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "-r", str(ROOT / "requirements.lock")], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
    STAMP.write_text(wanted)


def compile_sources() -> None:
    """Write Bastion's own bytecode ahead of time. Where ``PYTHONDONTWRITEBYTECODE`` is
    set (as on the machines the suite runs on), every ``bastion`` process would otherwise
    compile its ~100 modules again, at each of the ~480 server and command starts of a
    test run (about 0.15 s of CPU each). compileall skips what is up to date; best
    effort: a checkout that cannot be written runs without the cache."""
    subprocess.run(
        [str(BIN / "python"), "-m", "compileall", "-q", str(ROOT / "src")],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# Debian packages the tests use: the browser for page tests, an independent TOTP
# implementation (oathtool) and a QR decoder (zbarimg) for the MFA interoperability tests;
# wrk for the benchmark's smoke test.
SYSTEM_TOOLS = {
    "/usr/bin/chromium": "chromium",
    "/usr/bin/oathtool": "oathtool",
    "/usr/bin/zbarimg": "zbar-tools",
    "/usr/bin/wrk": "wrk",
}  # the benchmark's load generator (bench/run.py)


def ensure_system_packages() -> None:
    """Install missing Debian packages when we may (root + apt); tests that need a
    missing tool skip locally and fail under CI."""
    missing = [pkg for path, pkg in SYSTEM_TOOLS.items() if not Path(path).exists()]
    if shutil.which("npm") is None:  # the OpenID provider and axe-core come from npm
        missing += ["nodejs", "npm"]
    if not missing or shutil.which("apt-get") is None:
        return
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        print(f"dev.py: missing {missing}; install them with apt-get", file=sys.stderr)
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=False,
        env=env,
    )


def run_tests(args: list[str]) -> int:
    tool = lambda name: str(BIN / name)  # noqa: E731
    steps = [
        [tool("ruff"), "check", "src", "tests", "bench", "dev.py"],
        [tool("ruff"), "format", "--check", "src", "tests", "bench", "dev.py"],
        [tool("mypy")],
    ]
    for step in steps:
        print("+", " ".join(Path(step[0]).name if i == 0 else s for i, s in enumerate(step)))
        if subprocess.run(step, cwd=ROOT).returncode != 0:
            return 1
    # Most of the suite waits on real server processes: three pytest workers keep two
    # cores busy. Each test file stays on one worker (its servers are shared).
    if not any(a == "-n" or a.startswith(("-n", "--numprocesses")) for a in args):
        args = ["-n", "3", "--dist", "loadfile", *args]
    return subprocess.run([tool("pytest"), *args], cwd=ROOT).returncode


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    command, rest = sys.argv[1], sys.argv[2:]
    ensure_venv()
    compile_sources()
    if command == "test":
        ensure_system_packages()
        return run_tests(rest)
    os.execv(str(BIN / "bastion"), [str(BIN / "bastion"), command, *rest])
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
