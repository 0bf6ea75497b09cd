"""SPEC §11 mail: the durable outbox, the delivery worker, SMTP, and ``bastion outbox``,
against a real SMTP server (aiosmtpd), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.conftest import ServerFactory
from tests.mailsink import MailSink, html_part, link_token, mail_server, text_part, wait_until
from tests.support import Server, register, unique_email
from tests.tls_certs import make_tls_files

EVENTS = {
    "email_verification",
    "password_reset",
    "password_changed",
    "account_locked",
    "new_device",
    "mfa_enabled",
    "mfa_disabled",
    "backup_code_used",
}
FAST_RETRY = {"BASTION_MAIL_RETRY_BASE": "0.2", "BASTION_MAIL_RETRY_MAX": "1"}


@pytest.fixture(scope="module")
def mailed(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, MailSink]]:
    env = {"BASTION_EMAIL_FROM": "Bastion Test <auth@bastion.test>"}
    with mail_server(backend, tmp_path_factory.mktemp(f"mail-{backend}"), env) as pair:
        yield pair


def forgot(srv: Server, email: str) -> None:
    with srv.client() as c:
        r = c.post("/api/auth/password/forgot", json={"email": email})
        assert r.status_code == 202, r.text


def outbox_json(srv: Server) -> list[dict[str, Any]]:
    out = srv.cli("outbox", "--json")
    assert out.returncode == 0, out.stderr
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


def attempted(srv: Server, recipient: str, timeout: float = 20) -> list[dict[str, Any]]:
    """The recipient's outbox rows once a delivery attempt was counted (empty if none
    was within ``timeout``)."""

    def tried() -> list[dict[str, Any]]:
        return [r for r in outbox_json(srv) if r["recipient"] == recipient and r["attempts"]]

    deadline = time.monotonic() + timeout
    while not tried() and time.monotonic() < deadline:
        time.sleep(0.5)
    return tried()


def test_every_message_has_text_and_html_parts_and_event_header(
    mailed: tuple[Server, MailSink],
) -> None:
    srv, sink = mailed
    email = unique_email("mail")
    with srv.client() as c:
        assert register(c, email).status_code == 201
    forgot(srv, email)
    messages = sink.wait_for(email, count=2)
    assert {m["X-Bastion-Event"] for m in messages} == {"email_verification", "password_reset"}
    for msg in messages:
        assert msg.get_content_type() == "multipart/alternative"
        kinds = [p.get_content_type() for p in msg.iter_parts()]
        assert kinds == ["text/plain", "text/html"]
        assert msg["X-Bastion-Event"] in EVENTS
        assert msg["From"] == "Bastion Test <auth@bastion.test>"
        assert msg["To"] == email
        assert msg["Subject"] and msg["Message-ID"] and msg["Date"]
        assert "<html" in html_part(msg) and "<html" not in text_part(msg)
    reset = next(m for m in messages if m["X-Bastion-Event"] == "password_reset")
    token = link_token(reset, "/reset-password")
    assert f"{srv.url}/reset-password?token={token}" in html_part(reset)


def test_mail_is_delivered_promptly(mailed: tuple[Server, MailSink]) -> None:
    """The worker wakes when mail is queued instead of waiting for its next poll."""
    srv, sink = mailed
    email = unique_email("mail")
    with srv.client() as c:
        assert register(c, email).status_code == 201
    sink.wait_for(email)
    took = []
    for _ in range(3):
        before = len(sink.to(email, "password_reset"))
        start = time.monotonic()
        forgot(srv, email)
        sink.wait_for(email, "password_reset", count=before + 1, timeout=10)
        took.append(time.monotonic() - start)
    assert min(took) < 0.8, took


def test_smtp_outage_delays_mail_never_loses_it(make_server: ServerFactory) -> None:
    sink = MailSink().start()
    try:
        srv = make_server(env={"BASTION_SMTP_URL": sink.url, **FAST_RETRY})
        email = unique_email("outage")
        with srv.client() as c:
            assert register(c, email).status_code == 201
        sink.wait_for(email, "email_verification")
        sink.stop()  # the outage
        forgot(srv, email)

        def failed_attempt() -> list[Any]:
            return [
                r
                for r in outbox_json(srv)
                if r["recipient"] == email and r["event"] == "password_reset" and r["attempts"]
            ]

        deadline = time.monotonic() + 15
        while not failed_attempt() and time.monotonic() < deadline:
            time.sleep(0.2)
        rows = failed_attempt()
        assert rows and rows[0]["status"] in ("pending", "sending") and rows[0]["last_error"]
        table = srv.cli("outbox")
        assert table.returncode == 0 and email in table.stdout
        assert "password_reset" in table.stdout

        sink.start()  # the same port again
        got = sink.wait_for(email, "password_reset", timeout=20)
        assert got
        time.sleep(2)  # no second copy arrives later
        assert len(sink.to(email, "password_reset")) == 1
        assert not [r for r in outbox_json(srv) if r["recipient"] == email]
    finally:
        sink.stop()


def test_two_processes_on_one_database_never_send_a_message_twice(
    make_server: ServerFactory,
) -> None:
    sink = MailSink()  # down at first: 30 messages pile up in the outbox
    env = {"BASTION_SMTP_URL": sink.url, **FAST_RETRY}
    a = make_server(env=env)
    b = make_server(env=env, database_url=a.database_url)
    emails = [unique_email(f"dup{i}") for i in range(30)]

    def signup(i: int) -> int:
        with (a if i % 2 else b).client() as c:
            return register(c, emails[i]).status_code

    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            assert set(pool.map(signup, range(30))) == {201}
        sink.start()

        def verifications() -> list[Any]:
            return [m for e in emails for m in sink.to(e, "email_verification")]

        wait_until(verifications, count=30, timeout=30)

        # And with SMTP up all along: 30 messages queued at once through both processes.
        def ask(i: int) -> None:
            forgot(a if i % 2 else b, emails[i])

        with ThreadPoolExecutor(max_workers=10) as pool:
            list(pool.map(ask, range(30)))

        def resets() -> list[Any]:
            return [m for e in emails for m in sink.to(e, "password_reset")]

        wait_until(resets, count=30, timeout=30)
        time.sleep(2.5)  # let any duplicate arrive
        for e in emails:
            assert len(sink.to(e, "email_verification")) == 1, e
            assert len(sink.to(e, "password_reset")) == 1, e
        ids = [m["Message-ID"] for m in verifications() + resets()]
        assert len(ids) == len(set(ids)) == 60
    finally:
        sink.stop()


def test_without_smtp_mail_stays_in_outbox_and_body_never_logged(
    make_server: ServerFactory,
) -> None:
    srv = make_server()
    empty = srv.cli("outbox")
    assert empty.returncode == 0 and "No pending or failed mail" in empty.stdout
    email = unique_email("nosmtp")
    with srv.client() as c:
        assert register(c, email).status_code == 201
    forgot(srv, email)
    time.sleep(1.5)  # a worker, if any, would have tried by now
    mine = [r for r in outbox_json(srv) if r["recipient"] == email]
    assert {r["event"] for r in mine} == {"email_verification", "password_reset"}
    assert all(r["status"] == "pending" and r["attempts"] == 0 for r in mine)
    assert all("text_body" not in r for r in mine)  # the list carries no bodies

    table = srv.cli("outbox")
    assert table.returncode == 0 and email in table.stdout

    reset_id = next(r["id"] for r in mine if r["event"] == "password_reset")
    shown = srv.cli("outbox", "--show", str(reset_id))
    assert shown.returncode == 0, shown.stderr
    match = re.search(r"/reset-password\?token=([A-Za-z0-9_\-]+)", shown.stdout)
    assert match, shown.stdout
    token = match.group(1)
    assert "text/html" in shown.stdout
    as_json = json.loads(srv.cli("outbox", "--show", str(reset_id), "--json").stdout)
    assert token in as_json["text_body"] and token in as_json["html_body"]

    logs = srv.logs()
    assert email in logs and "password_reset" in logs and "email_verification" in logs
    assert token not in logs
    assert "token=" not in logs and "Reset it here" not in logs
    for args in (("--show", "999999"), ("--show", "abc")):
        out = srv.cli("outbox", *args)
        assert out.returncode == 2, (args, out)
        assert out.stderr.startswith("error:") and len(out.stderr.strip().splitlines()) == 1
    # The shown link is the real one.
    with srv.client() as c:
        r = c.post(
            "/api/auth/password/reset", json={"token": token, "password": "Another-Horse-7?"}
        )
        assert r.status_code == 200


def test_account_locked_mail_is_delivered(mailed: tuple[Server, MailSink]) -> None:
    srv, sink = mailed
    email = unique_email("lock")
    with srv.client() as c:
        assert register(c, email).status_code == 201
    with srv.client() as c:
        for _ in range(5):
            c.post("/api/auth/login", json={"email": email, "password": "Wrong-Horse-1!"})
    locked = sink.wait_for(email, "account_locked")
    assert len(locked) == 1
    assert locked[0].get_content_type() == "multipart/alternative"


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_login_and_wrong_credentials_keep_mail(make_server: ServerFactory) -> None:
    sink = MailSink(login=("mailer", "s3cret pass")).start()
    try:
        good = make_server(
            env={"BASTION_SMTP_URL": f"smtp://mailer:s3cret%20pass@127.0.0.1:{sink.port}"}
        )
        email = unique_email("auth")
        with good.client() as c:
            assert register(c, email).status_code == 201
        assert sink.wait_for(email, "email_verification")

        bad = make_server(
            env={
                "BASTION_SMTP_URL": f"smtp://mailer:wrong@127.0.0.1:{sink.port}",
                **FAST_RETRY,
            },
            database_url=good.database_url,
        )
        good.stop()  # only the misconfigured process is left to send
        other = unique_email("auth")
        with bad.client() as c:
            assert register(c, other).status_code == 201
        rows = attempted(bad, other)
        assert rows and rows[0]["status"] in ("pending", "sending") and rows[0]["last_error"]
        assert not sink.to(other)
        assert "wrong" not in bad.logs()  # the password is not logged
    finally:
        sink.stop()


MAILER = ("mailer", "s3cret pass")


def _with_login(url: str) -> str:
    return url.replace("://", "://mailer:s3cret%20pass@", 1)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # implicit TLS
@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_mail_over_tls_authenticates_after_the_handshake(
    make_server: ServerFactory, tmp_path: Path, mode: Literal["starttls", "implicit"]
) -> None:
    """``smtp://…?starttls=true`` and ``smtps://`` against a relay that holds a
    certificate from a private CA, trusted through ``SSL_CERT_FILE``: the message
    arrives over TLS, with AUTH (which the STARTTLS relay refuses before the upgrade)."""
    files = make_tls_files(tmp_path / "tls")
    sink = MailSink(login=MAILER, tls=mode, tls_files=files).start()
    try:
        srv = make_server(
            env={"BASTION_SMTP_URL": _with_login(sink.url), "SSL_CERT_FILE": str(files.ca)}
        )
        email = unique_email("tls")
        with srv.client() as c:
            assert register(c, email).status_code == 201
        (msg,) = sink.wait_for(email, "email_verification")
        assert link_token(msg, "/verify-email")
        assert sink.tls_versions and all(v in ("TLSv1.2", "TLSv1.3") for v in sink.tls_versions)
        assert "s3cret" not in srv.logs()
    finally:
        sink.stop()


def test_mail_to_a_relay_with_an_untrusted_certificate_waits_in_the_outbox(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """A certificate that does not verify is a failed delivery like any other: the
    message stays in the outbox with the error, nothing goes out in clear, and once the
    relay's CA is trusted (a restart with ``SSL_CERT_FILE``) it is delivered."""
    files = make_tls_files(tmp_path / "tls")
    stranger = make_tls_files(tmp_path / "other-ca")
    sink = MailSink(login=MAILER, tls="starttls", tls_files=files).start()
    try:
        url = _with_login(sink.url)
        wrong = make_server(
            env={"BASTION_SMTP_URL": url, "SSL_CERT_FILE": str(stranger.ca), **FAST_RETRY}
        )
        email = unique_email("tls")
        with wrong.client() as c:
            assert register(c, email).status_code == 201
        rows = attempted(wrong, email)
        assert rows and rows[0]["status"] in ("pending", "sending"), rows
        assert "certificate" in rows[0]["last_error"].lower(), rows[0]["last_error"]
        assert not sink.to(email) and not sink.tls_versions
        assert "s3cret" not in wrong.logs()
        wrong.stop()

        make_server(
            env={"BASTION_SMTP_URL": url, "SSL_CERT_FILE": str(files.ca), **FAST_RETRY},
            database_url=wrong.database_url,
        )
        assert sink.wait_for(email, "email_verification", timeout=30)
    finally:
        sink.stop()


def test_a_stopping_server_hands_back_the_mail_it_was_sending(
    make_server: ServerFactory,
) -> None:
    """SIGTERM while the worker waits on a relay that never answers: the claimed
    message goes back to ``pending`` with no attempt counted, instead of waiting out
    the 120 s lease, and the next process delivers it at once."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never greets
        port = silent.getsockname()[1]
        # Two workers: the stop goes through the supervisor to each worker's shutdown.
        first = make_server(env={"BASTION_SMTP_URL": f"smtp://127.0.0.1:{port}"}, workers=2)
        email = unique_email("handback")
        with first.client() as c:
            assert register(c, email).status_code == 201

        def row() -> dict[str, Any]:
            (found,) = [r for r in outbox_json(first) if r["recipient"] == email]
            return found

        deadline = time.monotonic() + 15
        while row()["status"] != "sending" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert row()["status"] == "sending"  # claimed, the worker inside connect()
        first.stop()
        after = row()
        assert (after["status"], after["attempts"]) == ("pending", 0), after
    assert "handed back" in first.logs()
    sink = MailSink().start()
    try:
        make_server(env={"BASTION_SMTP_URL": sink.url}, database_url=first.database_url)
        assert sink.wait_for(email, "email_verification", timeout=15)
    finally:
        sink.stop()


def test_smtp_url_forms() -> None:
    from bastion.mail.smtp import parse_url
    from bastion.settings import ConfigError, load_settings

    plain = parse_url("smtp://mail.example:2525")
    assert (plain.host, plain.port, plain.implicit_tls, plain.starttls) == (
        "mail.example",
        2525,
        False,
        False,
    )
    assert parse_url("smtp://mail.example").port == 25
    tls = parse_url("smtps://u%40x:p%2Fw@mail.example")
    assert (tls.port, tls.implicit_tls, tls.username, tls.password) == (465, True, "u@x", "p/w")
    assert "p/w" not in tls.describe()
    assert parse_url("smtp://h:587?starttls=true").starttls is True
    for bad in ("http://h", "smtp://", "smtps://h?starttls=true", "smtp://h:99999"):
        with pytest.raises(ConfigError):
            load_settings(smtp_url=bad)
