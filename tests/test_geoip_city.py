"""Optional MaxMind DB for city-level session locations (issue 6, SPEC §7)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.core import devices
from tests.mmdb_writer import city_record, write
from tests.support import register


@pytest.fixture
def city_db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "city.mmdb"
    write(path, "81.2.69.0/24", city_record("London", "United Kingdom", "GB"))
    yield path
    devices.use_city_database(None)


def test_city_database_gives_city_and_country(city_db: Path) -> None:
    devices.use_city_database(str(city_db))
    assert devices.locate("81.2.69.160") == "London, United Kingdom"
    # Not in the city file: the shipped country data still answers.
    assert devices.locate("8.8.8.8") not in ("", "London, United Kingdom")
    assert devices.locate("10.1.2.3") == "Unknown"
    assert devices.locate("::1") == "Unknown"


def test_sessions_record_city_from_mmdb(make_server: object, city_db: Path) -> None:
    srv = make_server(  # type: ignore[operator]
        env={"BASTION_GEOIP_DATABASE": str(city_db), "BASTION_TRUSTED_PROXIES": "127.0.0.1"}
    )
    with srv.client(headers={"X-Forwarded-For": "81.2.69.160"}) as c:
        assert register(c).status_code == 201
        sessions = c.get("/api/auth/sessions").json()["sessions"]
    assert sessions[0]["location"] == "London, United Kingdom"
    assert sessions[0]["ip_address"] == "81.2.69.160"


def test_unreadable_mmdb_stops_the_server_with_one_line(server: object, tmp_path: Path) -> None:
    bogus = tmp_path / "not.mmdb"
    bogus.write_bytes(b"not a maxmind db")
    srv = server  # reuse its environment for the CLI
    env_backup = dict(srv.env)  # type: ignore[attr-defined]
    try:
        srv.env["BASTION_GEOIP_DATABASE"] = str(bogus)  # type: ignore[attr-defined]
        out = srv.cli("migrate")  # type: ignore[attr-defined]
        assert out.returncode == 2
        assert len(out.stderr.strip().splitlines()) == 1
        assert "BASTION_GEOIP_DATABASE" in out.stderr
    finally:
        srv.env.clear()  # type: ignore[attr-defined]
        srv.env.update(env_backup)  # type: ignore[attr-defined]
