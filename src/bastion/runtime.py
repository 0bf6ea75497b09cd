"""The service container: everything a flow may use, built once per process."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bastion.core import secrets as core_secrets
from bastion.core.passwords import Hasher
from bastion.limits import Limiter
from bastion.limits.database import DatabaseLimiter
from bastion.settings import Settings
from bastion.store.db import Database

# Argon2 threads per process when nothing else is said: one per core is all the CPU there
# is. `bastion serve --workers N` shares the cores out instead (``threads_per_worker``).
HASH_THREADS = os.cpu_count() or 2


def threads_per_worker(workers: int) -> int:
    """Hashing threads for each of ``workers`` processes on this machine: the cores shared
    out, at least one. More hashes at once than cores only makes each slower: on two
    cores, two workers of two threads each did 58-63 logins/s, of one thread each 72-77
    (docs/performance.md); the kernel spreads connections over the workers' sockets
    (web/serving.py), so every worker has logins to hash."""
    return max(1, HASH_THREADS // max(1, workers))


HASH_NICE = 10


def _lower_hash_thread_priority() -> None:
    """Hash threads run at a lower CPU priority than the event loop (Linux keeps a nice
    value per thread), so that logins saturating the CPU never delay request handling:
    the scheduler runs the loop first whenever it has work, and hashing takes the rest."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICE)
    except (AttributeError, OSError):  # not Linux: plain threads
        pass


def _one_malloc_arena() -> None:
    """Make glibc use one malloc arena for all threads of this process.

    Each Argon2id computation in argon2-cffi mallocs 19 MiB (libsodium's are mapped
    apart: core/argon2_sodium.py). With glibc's default of one arena per thread (up to
    eight per core), every hashing thread keeps its block in its own arena after the
    hash, where ``malloc_trim`` does not reach it: 19-38 MiB per worker for good, a
    quarter of its memory. In the one arena ``HashMemory`` can return it, and hashing
    measured as fast. Python's small objects do not go through malloc, so the shared
    arena's lock is rarely contended. Set at import, before any thread starts; no
    effect outside glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, 1)
    except (OSError, AttributeError):
        pass


M_ARENA_MAX = -8  # glibc <malloc.h>
_one_malloc_arena()


class HashMemory:
    """Returns the hashing memory to the OS once password hashing pauses.

    Argon2id through libsodium maps and unmaps its own blocks per hash
    (core/argon2_sodium.py); what argon2-cffi computes (more than one lane, other
    types) mallocs 19 MiB or more, which with one arena (above) stays free in the
    process heap, so back-to-back hashes do not fault it in again. After
    ``IDLE_SECONDS`` without a hash, ``malloc_trim`` gives it back: a busy server never
    releases, an idle worker does not keep memory it is not using."""

    IDLE_SECONDS = 5.0

    def __init__(self) -> None:
        self.trim = _malloc_trim()
        self.last = 0.0
        self.handle: asyncio.TimerHandle | None = None

    def hashed(self) -> None:
        """Called on the event loop after each hash."""
        loop = asyncio.get_running_loop()
        self.last = loop.time()
        if self.handle is None:
            self.handle = loop.call_later(self.IDLE_SECONDS, self._check)

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self.last + self.IDLE_SECONDS - loop.time()
        if wait > 0:
            self.handle = loop.call_later(wait, self._check)
            return
        self.handle = None
        if self.trim is not None:
            self.trim(0)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


_startup_frozen = False


def freeze_startup_objects() -> None:
    """Take what start-up built out of the cyclic garbage collector's sight, once per
    process: the GeoIP table, the user-agent rules and the modules are about 147,000
    tracked objects, and a full collection walks them all: about 100 ms measured, on
    the event loop, with every request in flight waiting (0.02 ms once frozen). They
    live as long as the process, so there is nothing to find in them; later objects
    are collected as usual (tests/test_runtime.py)."""
    global _startup_frozen
    if _startup_frozen:
        return
    _startup_frozen = True
    gc.collect()
    gc.freeze()


def _malloc_trim() -> Any:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _hash_pool(threads: int = HASH_THREADS) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        max_workers=threads,
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
    hash_memory: HashMemory = field(default_factory=HashMemory)
    # Last-active writes in flight, by session id (flows/sessions.py touch_last_active).
    touching: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    # Bodies of GET /api/auth/session by what they are made of (web/deps.py).
    session_bodies: dict[tuple[Any, ...], bytes] = field(default_factory=dict)

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
            hash_pool=_hash_pool(settings.hash_threads or HASH_THREADS),
        )

    async def hash_password(self, password: str) -> str:
        """Argon2id in a worker thread: hashing never blocks the event loop (SPEC §4)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.hash_pool, self.hasher.hash, password)
        finally:
            self.hash_memory.hashed()

    async def verify_password(self, stored_hash: str | None, password: str) -> bool:
        loop = asyncio.get_running_loop()
        try:
            ok = await loop.run_in_executor(
                self.hash_pool, self.hasher.verify, stored_hash or self.dummy_hash, password
            )
        finally:
            self.hash_memory.hashed()
        return ok and stored_hash is not None

    async def close(self) -> None:
        self.hash_memory.cancel()
        close = getattr(self.limiter, "close", None)
        if close is not None:
            await close()
        from bastion.store.direct import close_direct

        await close_direct(self.db)  # the hot paths' own connections (store/direct.py)
        await self.db.dispose()
        self.hash_pool.shutdown(wait=False)
