"""Apply Alembic migrations programmatically (``bastion migrate`` and ``bastion serve``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "heads") -> None:
    """Apply every branch: areas add migrations off a shared base, merged as they meet."""
    command.upgrade(alembic_config(database_url), revision)
