"""The service container: everything a flow may use, built once per process."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bastion.core import secrets as core_secrets
from bastion.core.passwords import Hasher
from bastion.limits import Limiter
from bastion.limits.database import DatabaseLimiter
from bastion.settings import Settings
from bastion.store.db import Database


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

    @classmethod
    def create(cls, settings: Settings) -> Bastion:
        db = Database(settings.database_url)
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
        return await asyncio.to_thread(self.hasher.hash, password)

    async def verify_password(self, stored_hash: str | None, password: str) -> bool:
        return (
            await asyncio.to_thread(self.hasher.verify, stored_hash or self.dummy_hash, password)
            and stored_hash is not None
        )

    async def close(self) -> None:
        close = getattr(self.limiter, "close", None)
        if close is not None:
            await close()
        await self.db.dispose()
