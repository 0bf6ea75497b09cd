"""Rate limiting: fixed-window counters behind one interface, in the database by default
and in Redis when ``BASTION_REDIS_URL`` is set. Both hold across processes.

Account lockout counters are not here: they live on the user row (and device_lockouts)
in the database, where one conditional UPDATE reserves an attempt atomically
(flows/lockout.py), and where the admin API reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Count:
    count: int
    retry_after: int  # seconds until the window ends


class Limiter(Protocol):
    async def hit(self, key: str, window: int, now: datetime) -> Count:
        """Add one to the key's window and return the new count."""

    async def peek(self, key: str, now: datetime) -> Count:
        """The current count without changing it (0 when no window is open)."""

    async def reset(self, key: str) -> None: ...

    async def ping(self) -> bool: ...
