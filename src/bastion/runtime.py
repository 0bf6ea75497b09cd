"""The service container: everything a flow may use, built once per process."""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bastion.core import secrets as core_secrets
from bastion.core.passwords import Hasher
from bastion.limits import Limiter
from bastion.limits.database import DatabaseLimiter
from bastion.settings import Settings
from bastion.store.db import Database

# Argon2 threads per process: one per core is all the CPU there is (docs/performance.md).
HASH_THREADS = os.cpu_count() or 2
HASH_NICE = 10


def _lower_hash_thread_priority() -> None:
    """Hash threads run at a lower CPU priority than the event loop (Linux keeps a nice
    value per thread), so that logins saturating the CPU never delay request handling:
    the scheduler runs the loop first whenever it has work, and hashing takes the rest."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICE)
    except (AttributeError, OSError):  # not Linux: plain threads
        pass


def _hash_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        max_workers=HASH_THREADS,
        thread_name_prefix="argon2",
        initializer=_lower_hash_thread_priority,
    )


@dataclass
class Bastion:
    settings: Settings
    db: Database
    limiter: Limiter
    hasher: Hasher
    csrf: core_secrets.Signer
    device: core_secrets.Signer
    cookies: core_secrets.Signer
    encryptor: core_secrets.Encryptor
    dummy_hash: str
    # Woken when a message is queued, so the mail worker need not poll hard.
    mail_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    hash_pool: ThreadPoolExecutor = field(default_factory=_hash_pool)

    @classmethod
    def create(cls, settings: Settings) -> Bastion:
        db = Database(settings.database_url, settings.db_pool_size)
        limiter: Limiter
        if settings.redis_url:
            from bastion.limits.redis import RedisLimiter

            limiter = RedisLimiter(settings.redis_url)
        else:
            limiter = DatabaseLimiter(db)
        ring = settings.secret_ring
        hasher = Hasher(settings.argon2)
        return cls(
            settings=settings,
            db=db,
            limiter=limiter,
            hasher=hasher,
            csrf=core_secrets.Signer(ring, "csrf"),
            device=core_secrets.Signer(ring, "device-cookie"),
            cookies=core_secrets.Signer(ring, "cookies"),
            encryptor=core_secrets.Encryptor(ring, "mfa-secrets"),
            # Unknown emails verify against this, so they cost what a wrong password costs.
            dummy_hash=hasher.hash(core_secrets.new_token()),
        )

    async def hash_password(self, password: str) -> str:
        """Argon2id in a worker thread: hashing never blocks the event loop (SPEC §4)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.hash_pool, self.hasher.hash, password)

    async def verify_password(self, stored_hash: str | None, password: str) -> bool:
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(
            self.hash_pool, self.hasher.verify, stored_hash or self.dummy_hash, password
        )
        return ok and stored_hash is not None

    async def close(self) -> None:
        close = getattr(self.limiter, "close", None)
        if close is not None:
            await close()
        from bastion.store.sessions import close_direct

        await close_direct(self.db)  # the hot path's own connections (store/sessions.py)
        await self.db.dispose()
        self.hash_pool.shutdown(wait=False)
