"""SMTP transport (SPEC §1 ``SMTP_URL``, §11): building the MIME message and sending it.

``BASTION_SMTP_URL`` forms:

- ``smtp://host:port``: plain SMTP (port 25 when omitted);
- ``smtp://host:587?starttls=true``: upgrade with STARTTLS before sending, required;
- ``smtps://host:465``: implicit TLS from the first byte (port 465 when omitted);
- ``user:pass@`` in any of them: AUTH LOGIN/PLAIN after the (optional) TLS step.
  Percent-encode special characters in the user name and password.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    import aiosmtplib

TIMEOUT_SECONDS = 20.0
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    implicit_tls: bool = False
    starttls: bool = False
    timeout: float = TIMEOUT_SECONDS

    def describe(self) -> str:
        """For logs: never the password."""
        mode = "smtps" if self.implicit_tls else ("smtp+starttls" if self.starttls else "smtp")
        return f"{mode}://{self.host}:{self.port}"


def parse_url(url: str) -> SmtpConfig:
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("SMTP_URL must start with smtp:// or smtps://")
    if not parts.hostname:
        raise ValueError("SMTP_URL needs a host")
    implicit = parts.scheme == "smtps"
    query = {k.lower(): v[-1].lower() for k, v in parse_qs(parts.query).items()}
    starttls = query.get("starttls", "false") in _TRUE
    if implicit and starttls:
        raise ValueError("SMTP_URL: smtps:// is already TLS; drop ?starttls=true")
    return SmtpConfig(
        host=parts.hostname,
        port=parts.port or (465 if implicit else 25),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        implicit_tls=implicit,
        starttls=starttls,
    )


def build_message(row: Any, sender: str) -> EmailMessage:
    """A multipart/alternative message (text first, HTML preferred by clients) with the
    ``X-Bastion-Event`` header. The Message-ID is derived from the outbox id, so that
    in the rare case of a second delivery (a worker died mid-send) receivers can tell."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    created: datetime = row["created_at"]
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = row["recipient"]
    msg["Subject"] = row["subject"]
    msg["Date"] = format_datetime(created)
    msg["Message-ID"] = f"<bastion.{row['id']}.{int(created.timestamp())}@{domain}>"
    msg["X-Bastion-Event"] = row["event"]
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
    msg.set_content(row["text_body"])
    msg.add_alternative(row["html_body"], subtype="html")
    return msg


class SmtpTransport:
    """Sends messages; one connection per batch."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    def client(self) -> aiosmtplib.SMTP:
        import aiosmtplib  # loaded when mail is first sent, not in every worker

        c = self.config
        return aiosmtplib.SMTP(
            hostname=c.host,
            port=c.port,
            username=c.username,
            password=c.password,
            use_tls=c.implicit_tls,
            start_tls=c.starttls,
            timeout=c.timeout,
        )


def is_permanent(exc: BaseException) -> bool:
    """A 5xx refusal of the recipient will not get better by retrying (RFC 5321 §4.2.1);
    everything else (connection refused, timeouts, 4xx, auth) is retried."""
    import aiosmtplib

    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return bool(exc.recipients) and all(r.code >= 500 for r in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return exc.code >= 500
    return False
