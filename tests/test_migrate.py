"""``store/migrate.py``: a database at the heads is recognised without Alembic, and any
other state still goes through Alembic (both databases)."""

from __future__ import annotations

from pathlib import Path

import alembic.command
import pytest
from alembic.script import ScriptDirectory

from bastion.store.migrate import alembic_config, applied_revisions, head_revisions, upgrade
from tests.support import database, db_query


def test_heads_read_from_the_scripts_are_alembics_heads() -> None:
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert head_revisions() == frozenset(scripts.get_heads())
    assert len(head_revisions()) == 1


def test_upgrade_from_nothing_from_an_old_revision_and_at_the_heads(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with database(backend, tmp_path, migrated=False) as url:
        assert applied_revisions(url) is None  # no table yet: Alembic decides
        upgrade(url, "0002_admin")
        assert applied_revisions(url) == frozenset({"0002_admin"})
        upgrade(url)  # not at the heads: Alembic migrates the rest
        assert applied_revisions(url) == head_revisions()
        assert db_query(url, "SELECT count(*) FROM refresh_tokens")[0][0] == 0

        # At the heads Alembic is not asked at all.
        monkeypatch.setattr(alembic.command, "upgrade", lambda *a, **k: pytest.fail("Alembic"))
        upgrade(url)
        assert applied_revisions(url) == head_revisions()


def test_unreadable_urls_leave_the_decision_to_alembic(tmp_path: Path) -> None:
    assert applied_revisions(f"sqlite:///{tmp_path}/missing.db") is None
    assert applied_revisions("sqlite://") is None
    assert applied_revisions("mysql://nobody@127.0.0.1:1/none") is None
