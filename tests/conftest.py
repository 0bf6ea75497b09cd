"""Fixtures: a shared server per database backend, and a factory for servers with their
own settings. Backends: SQLite always; PostgreSQL when reachable (required under CI)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support import IN_CI, PG_HOST, PG_PORT, Server, database, port_open

PG_UP = port_open(PG_HOST, PG_PORT)
REDIS_UP = port_open("127.0.0.1", 6379)


def pytest_sessionstart(session: pytest.Session) -> None:
    if IN_CI and not (PG_UP and REDIS_UP):
        raise pytest.UsageError(
            f"CI=true but PostgreSQL ({PG_UP=}) or Redis ({REDIS_UP=}) is unreachable"
        )


BACKENDS = [
    "sqlite",
    pytest.param(
        "postgres", marks=pytest.mark.skipif(not PG_UP, reason="PostgreSQL not reachable")
    ),
]


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per backend for tests that need no special settings."""
    tmp = tmp_path_factory.mktemp(f"srv-{backend}")
    with database(backend, tmp) as url:
        srv = Server(url, tmp).start()
        try:
            yield srv
        finally:
            srv.stop()


ServerFactory = Callable[..., Server]


@pytest.fixture
def make_server(backend: str, tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers with their own settings on a fresh database of the backend.

    ``make_server(env={...}, workers=2)``; pass ``database_url=`` to share one database
    between several servers (two processes on one database).
    """
    with ExitStack() as stack:

        def factory(
            env: dict[str, str] | None = None, workers: int = 1, database_url: str | None = None
        ) -> Server:
            url = database_url or stack.enter_context(database(backend, tmp_path))
            srv = Server(url, tmp_path / f"w{len(stack._exit_callbacks)}", env, workers)
            stack.callback(srv.stop)
            return srv.start()

        yield factory


@pytest.fixture
def requires_redis() -> None:
    if not REDIS_UP:
        pytest.skip("Redis not reachable")
