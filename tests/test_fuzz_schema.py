"""Schema fuzzing (issue 11): schemathesis generates requests for every operation of
Bastion's own OpenAPI document, served by a real server, unauthenticated and
authenticated (an admin's cookie session with the CSRF header, and an admin's bearer
access token). Every answer must be documented (status, content type, body schema) and
none may be a 5xx; afterwards the server is still healthy and still signs people in.

Budget: ``FUZZ_EXAMPLES`` examples per operation, per mode and per authentication
(positive and negative data); at least ``MIN_REQUESTS`` requests in total. Raise
``BASTION_FUZZ_EXAMPLES`` for a longer run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

from tests.conftest import PG_UP
from tests.support import STRONG, TLS, Server, database, login, unique_email

FUZZ_EXAMPLES = int(os.environ.get("BASTION_FUZZ_EXAMPLES", "15"))
MIN_REQUESTS = 2000
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Operations that end the caller's session or token: sign in again after them.
ENDS_SESSION = {
    "POST /api/auth/logout",
    "POST /api/auth/sessions/revoke-all",
    "DELETE /api/auth/sessions/{session_id}",
    "POST /api/auth/password/change",
    "POST /api/auth/revoke",
    "POST /api/auth/sessions/revoke-others",
}
OAUTH = (
    '{"github": {"client_id": "fuzz", "client_secret": "fuzz", "base_url": "http://127.0.0.1:9"}}'
)


@dataclass
class Caller:
    """How generated requests authenticate; refreshed when an operation ends the session."""

    server: Server
    email: str
    mode: str  # "anonymous", "cookie" or "bearer"
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)

    def sign_in(self) -> None:
        self.headers, self.cookies = {}, {}
        if self.mode == "anonymous":
            return
        with self.server.client() as c:
            if self.mode == "cookie":
                r = login(c, self.email)
                assert r.status_code == 200, r.text
                self.cookies = {k: v for k, v in c.cookies.items()}
                self.headers = {"X-CSRF-Token": c.cookies["bastion_csrf"]}
            else:
                r = c.post(
                    "/api/auth/token",
                    data={"grant_type": "password", "username": self.email, "password": STRONG},
                )
                assert r.status_code == 200, r.text
                self.headers = {"Authorization": "Bearer " + r.json()["access_token"]}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    backend = "postgres" if PG_UP else "sqlite"
    with database(backend, tmp) as url:
        srv = Server(
            url,
            tmp,
            env={"BASTION_OAUTH_PROVIDERS": OAUTH, "BASTION_INTROSPECTION_TOKEN": "i" * 40},
        ).start()
        try:
            yield srv
        finally:
            srv.stop()


@pytest.fixture(scope="module")
def admin_email(fuzz_server: Server) -> str:
    email = unique_email("fuzz-admin")
    done = fuzz_server.cli(
        "create-user", "--email", email, "--role", "admin", "--password-stdin", stdin=STRONG
    )
    assert done.returncode == 0, done.stderr
    return email


TOTAL = {"requests": 0}
STATUSES: dict[int, int] = {}


def bound(check: Any, label: str) -> Any:
    def run(case: Any) -> None:
        check(case, label)

    return run


def fuzz_all(server: Server, caller: Caller) -> tuple[int, list[str]]:
    schema = schemathesis.openapi.from_url(server.url + "/api/openapi.json")
    schema.config.update(base_url=server.url)
    sent = 0
    failures: list[str] = []
    session = requests.Session()
    caller.sign_in()
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        strategy = st.one_of(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        )

        def check(case: Any, label: str) -> None:
            nonlocal sent
            session.cookies.clear()
            response = case.call(
                session=session,
                headers={**caller.headers, **(case.headers or {})},
                cookies={**caller.cookies, **(case.cookies or {})},
                allow_redirects=False,
                timeout=30,
            )
            sent += 1
            STATUSES[response.status_code] = STATUSES.get(response.status_code, 0) + 1
            if label in ENDS_SESSION and response.status_code < 300:
                caller.sign_in()
            case.validate_response(response, checks=CHECKS)

        run = settings(
            max_examples=FUZZ_EXAMPLES * 2,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )(given(case=strategy)(bound(check, label)))

        try:
            run()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - FailureGroup; reported all at once
            failures.append(f"{caller.mode} {label}: {str(exc)[:3000]}")
            caller.sign_in()
    TOTAL["requests"] += sent
    return sent, failures


@pytest.mark.parametrize("mode", ["anonymous", "cookie", "bearer"])
def test_fuzzed_requests_get_documented_answers_and_no_server_error(
    mode: str, fuzz_server: Server, admin_email: str
) -> None:
    started = time.monotonic()
    sent, failures = fuzz_all(fuzz_server, Caller(fuzz_server, admin_email, mode))
    print(
        f"fuzz {mode}: {sent} requests in {time.monotonic() - started:.1f}s",
        sorted(STATUSES.items()),
    )
    STATUSES.clear()
    assert not failures, "\n\n".join(failures)
    assert sent > 0


def test_server_healthy_after_fuzzing_and_enough_requests_sent(
    fuzz_server: Server, admin_email: str
) -> None:
    assert TOTAL["requests"] >= MIN_REQUESTS, TOTAL
    assert httpx.get(fuzz_server.url + "/healthz", verify=TLS).status_code == 200
    assert httpx.get(fuzz_server.url + "/readyz", verify=TLS).status_code == 200
    with fuzz_server.client() as c:
        assert login(c, admin_email).status_code == 200
        assert c.get("/api/auth/session").status_code == 200
    assert "Traceback" not in fuzz_server.logs()
