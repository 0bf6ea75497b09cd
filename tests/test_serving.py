"""``bastion serve --workers N`` on Linux (web/serving.py): each worker listens on its own
SO_REUSEPORT socket, so that connections are spread over the workers; a worker that
dies is replaced; a port already taken is an error, not a shared port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.support import Server, login, register, unique_email

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreading is Linux's"
)


def _workers(server: Server) -> list[int]:
    """The worker processes: the server's children that serve (not multiprocessing's
    resource tracker)."""
    assert server.proc is not None
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text()
    return [
        pid
        for pid in map(int, children.split())
        if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def _connections_per_worker(server: Server, pids: list[int], state: str = "01") -> dict[int, int]:
    """Sockets on the server's port held by each worker: established connections, or
    (state "0A") listening sockets. Each socket counts once: /proc/net/tcp is not a
    snapshot (the kernel walks its tables in pieces while other tests open and close
    connections), and a line can come twice (a fresh-clone CI run counted 17 of 16) or
    be missed; ``_assert_spread`` reads again when the total is off."""
    inodes: dict[str, int] = {}
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except FileNotFoundError:
                continue
            if target.startswith("socket:["):
                inodes[target[8:-1]] = pid
    held = dict.fromkeys(pids, 0)
    port = f"{server.port:04X}"
    counted: set[str] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, inode = fields[1], fields[9]
        if local.endswith(":" + port) and fields[3] == state and inode in inodes:
            if inode not in counted:
                counted.add(inode)
                held[inodes[inode]] += 1
    return held


def _assert_spread(server: Server, pids: list[int]) -> None:
    """16 connections opened at once (a burst, as a proxy's pool opens them: all in the
    accept queue before any worker wakes) land on every worker. With one shared socket
    the first worker to wake accepts the whole burst."""
    conns = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(16)]
    try:
        for c in conns:
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        for c in conns:
            assert c.recv(4096).startswith(b"HTTP/1.1 200")
        for _ in range(10):  # a read that missed one of the 16 is read again
            held = _connections_per_worker(server, pids)
            if sum(held.values()) == 16:
                break
            time.sleep(0.05)
        assert sum(held.values()) == 16, held
        assert all(n > 0 for n in held.values()), held
    finally:
        for c in conns:
            c.close()


def _serving_workers(server: Server, gone: int | None = None) -> list[int]:
    """The two workers once both listen (the server answers as soon as one does), none
    of them ``gone``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = _workers(server)
        listening = _connections_per_worker(server, pids, state="0A")
        if len(pids) == 2 and gone not in pids and all(listening.values()):
            return pids
        time.sleep(0.2)
    raise AssertionError(f"workers {pids}, listening {listening}")


def test_connections_are_spread_over_the_workers(make_server: ServerFactory) -> None:
    server = make_server(workers=2)
    _assert_spread(server, _serving_workers(server))


def test_a_worker_that_dies_is_replaced(make_server: ServerFactory) -> None:
    server = make_server(workers=2)
    first, second = _serving_workers(server)
    os.kill(first, signal.SIGKILL)
    now = _serving_workers(server, gone=first)
    assert second in now
    # The replacement listens on a socket of its own in the group: it gets connections.
    _assert_spread(server, now)


def test_a_port_already_listened_on_is_refused(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        env = {
            **os.environ,
            "BASTION_DATABASE_URL": f"sqlite:///{tmp_path}/taken.db",
            "BASTION_SECRET_KEY": "serving-test-secret-" + "x" * 32,
        }
        bastion = Path(sys.executable).parent / "bastion"
        done = subprocess.run(
            [str(bastion), "serve", "--port", str(port), "--workers", "2"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0
        assert "Address already in use" in done.stderr
    finally:
        taken.close()


def _hashing_threads(pid: int) -> int:
    """A worker's password-hashing threads: the ones at nice 10 (runtime.py)."""
    count = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        count += int(stat[stat.rindex(")") + 2 :].split()[16]) > 0  # the 19th field: nice
    return count


def _logins_at_once(server: Server, n: int) -> None:
    """``n`` sign-ins at once, each on a connection of its own."""
    with server.client() as c:
        email = unique_email("threads")
        assert register(c, email).status_code == 201

    def one(_: int) -> int:
        with server.client() as c:
            return login(c, email).status_code

    with ThreadPoolExecutor(n) as pool:
        assert set(pool.map(one, range(n))) == {200}


def test_workers_share_the_cores_for_hashing(make_server: ServerFactory) -> None:
    """``--workers 2``: each worker hashes in half the cores' threads (at least one), so
    the workers together never run more hashes at once than there are cores."""
    server = make_server(workers=2)
    pids = _serving_workers(server)
    _logins_at_once(server, 12)
    expected = max(1, (os.cpu_count() or 2) // 2)
    counts = [_hashing_threads(pid) for pid in pids]
    assert max(counts) == expected and all(c <= expected for c in counts), counts


def test_hash_threads_setting_is_honoured(make_server: ServerFactory) -> None:
    server = make_server(env={"BASTION_HASH_THREADS": "3"}, workers=2)
    pids = _serving_workers(server)
    _logins_at_once(server, 16)
    counts = [_hashing_threads(pid) for pid in pids]
    assert max(counts) == 3 and all(c <= 3 for c in counts), counts
