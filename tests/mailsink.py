"""A real SMTP server for tests (aiosmtpd), collecting every message it receives.

``MailSink`` runs aiosmtpd's ``Controller`` in its thread on a fixed free port, so it
can be stopped (an SMTP outage) and started again on the same port.
"""

from __future__ import annotations

import email
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support import Server, database, free_port
from tests.tls_certs import TlsFiles


class _Collector:
    def __init__(self, sink: MailSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        # After STARTTLS aiosmtpd swaps in the TLS transport; with implicit TLS it is
        # TLS from the start: either way this is how the message travelled.
        tls = server.transport.get_extra_info("ssl_object")
        with self.sink.lock:
            self.sink.messages.append((list(envelope.rcpt_tos), msg))
            self.sink.tls_versions.append(None if tls is None else tls.version())
        return "250 OK"


class MailSink:
    """``login=(user, password)`` makes the server require AUTH (over plain TCP unless
    ``tls`` is set). ``tls``: "starttls" (the client must upgrade before MAIL, and AUTH
    is refused before the upgrade) or "implicit" (TLS from the first byte), with
    ``tls_files``' certificate."""

    def __init__(
        self,
        port: int | None = None,
        login: tuple[str, str] | None = None,
        tls: Literal["starttls", "implicit"] | None = None,
        tls_files: TlsFiles | None = None,
    ) -> None:
        if (tls is None) != (tls_files is None):
            raise ValueError("tls and tls_files go together")
        self.port = port or free_port()
        self.login = login
        self.tls = tls
        self.tls_files = tls_files
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.tls_versions: list[str | None] = []  # per message, as it arrived
        self.lock = threading.Lock()
        self.controller: Controller | None = None

    @property
    def url(self) -> str:
        if self.tls == "implicit":
            return f"smtps://127.0.0.1:{self.port}"
        if self.tls == "starttls":
            return f"smtp://127.0.0.1:{self.port}?starttls=true"
        return f"smtp://127.0.0.1:{self.port}"

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and self.login is not None
        if ok:
            ok = (data.login.decode(), data.password.decode()) == self.login
        # handled=False: aiosmtpd answers 535 itself (with the default, handled=True, it
        # expects the authenticator to have answered and the client waits for a reply).
        return AuthResult(success=ok, handled=False)

    def start(self) -> MailSink:
        extra: dict[str, Any] = {}
        if self.login:
            extra = {
                "authenticator": self._authenticate,
                "auth_required": True,
                # aiosmtpd counts only STARTTLS as TLS here; with implicit TLS the
                # connection is encrypted from the first byte (``tls_versions`` shows it).
                "auth_require_tls": self.tls == "starttls",
            }
        if self.tls_files is not None:
            context = self.tls_files.server_context()
            if self.tls == "starttls":
                extra.update(tls_context=context, require_starttls=True)
            else:
                extra.update(ssl_context=context)
        self.controller = Controller(
            _Collector(self), hostname="127.0.0.1", port=self.port, **extra
        )
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def to(self, recipient: str, event: str | None = None) -> list[EmailMessage]:
        with self.lock:
            return [
                m
                for rcpts, m in self.messages
                if recipient.lower() in (r.lower() for r in rcpts)
                and (event is None or m["X-Bastion-Event"] == event)
            ]

    def wait_for(
        self, recipient: str, event: str | None = None, count: int = 1, timeout: float = 15
    ) -> list[EmailMessage]:
        return wait_until(lambda: self.to(recipient, event), count, timeout)


def wait_until(
    probe: Callable[[], list[EmailMessage]], count: int = 1, timeout: float = 15
) -> list[EmailMessage]:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if len(found) >= count or time.monotonic() > deadline:
            assert len(found) >= count, f"expected {count} message(s), got {len(found)}"
            return found
        time.sleep(0.05)


def text_part(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def html_part(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def link_token(msg: EmailMessage, path: str) -> str:
    """The token of the ``{BASE_URL}{path}?token=T`` link in the text part."""
    m = re.search(r"https?://\S+" + re.escape(path) + r"\?token=([A-Za-z0-9_\-]+)", text_part(msg))
    assert m, text_part(msg)
    return m.group(1)


@contextmanager
def mail_server(
    backend: str, tmp: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[Server, MailSink]]:
    """A running SMTP sink and a Bastion server (fresh database) that mails to it."""
    sink = MailSink().start()
    try:
        with database(backend, tmp) as url:
            srv = Server(url, tmp, {"BASTION_SMTP_URL": sink.url, **(env or {})}).start()
            try:
                yield srv, sink
            finally:
                srv.stop()
    finally:
        sink.stop()
