"""Apply Alembic migrations programmatically (``bastion migrate`` and ``bastion serve``)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
_REVISION = re.compile(r'^revision\s*=\s*"([^"]+)"', re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision\s*=\s*(.+)$", re.MULTILINE)


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "heads") -> None:
    """Apply every branch: areas add migrations off a shared base, merged as they meet.

    A database already at the heads is left alone without loading Alembic, which reads
    every migration script and the schema: about 0.4 s of CPU at each start of a server
    or a command otherwise."""
    if revision == "heads" and applied_revisions(database_url) == head_revisions():
        return
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


def head_revisions() -> frozenset[str]:
    """The revisions that no migration builds on, read from the scripts' own
    ``revision`` and ``down_revision`` lines."""
    revisions: set[str] = set()
    bases: set[str] = set()
    for script in (MIGRATIONS / "versions").glob("*.py"):
        text = script.read_text()
        revisions.update(_REVISION.findall(text))
        for down in _DOWN_REVISION.findall(text):
            bases.update(re.findall(r"\"([^\"]+)\"", down))
    return frozenset(revisions - bases)


def applied_revisions(database_url: str) -> frozenset[str] | None:
    """What ``alembic_version`` holds, or None when it cannot be read this way (no
    database yet, no table, another kind of URL): then Alembic decides."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(database_url)
        backend = url.get_backend_name()
        if backend == "sqlite":
            if not url.database or url.database == ":memory:" or not Path(url.database).exists():
                return None
            con = sqlite3.connect(f"file:{url.database}?mode=ro", uri=True)
            try:
                rows = con.execute("SELECT version_num FROM alembic_version").fetchall()
            finally:
                con.close()
        elif backend == "postgresql":
            from bastion.store.db import driver_dsn

            rows = asyncio.run(_pg_versions(driver_dsn(url)))
        else:
            return None
    except Exception:  # noqa: BLE001 - any doubt: let Alembic look
        return None
    return frozenset(str(r[0]) for r in rows)


async def _pg_versions(dsn: str) -> list[tuple[str]]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(r) for r in await conn.fetch("SELECT version_num FROM alembic_version")]
    finally:
        await conn.close()
