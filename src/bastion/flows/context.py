"""What a flow needs to know about the request, and the services it may use."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RequestContext:
    ip: str | None = None
    user_agent: str | None = None
    now: datetime = field(default_factory=utcnow)
    device_cookie: str | None = None
