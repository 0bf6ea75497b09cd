"""Argon2id verification in memory kept per thread, on huge pages (docs/performance.md).

argon2-cffi's ``verify`` lets libargon2 allocate its 19 MiB of blocks with malloc and
free them after every hash. Freed, they go back to the kernel often enough (Bastion's
workers use one malloc arena, runtime.py) that the next verify faults them in again: in
a server saturated with logins the hashing threads spent 1-2 ms per login in the kernel,
against 0.2 ms for the same hashes in a bare script. And on 4 KiB pages, Argon2's reads
of pseudo-random blocks miss the TLB on most blocks.

Here each hashing thread keeps one buffer, mapped once and advised to use transparent
huge pages (where the kernel offers them), and libargon2 computes in it through its
context API (``argon2_ctx`` with an allocation callback); the result is compared in
constant time, as ``argon2_verify`` does. libargon2 wipes the blocks after each hash
either way. ``release_idle`` gives the pages back when hashing pauses (called with the
malloc trim, runtime.HashMemory). What this path does not take (another type, version or
parallelism, memory over ``MAX_KIB``, anything it cannot decode) goes to argon2-cffi.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import mmap
import re
import threading
from typing import Any

from _argon2_cffi_bindings import ffi, lib

# $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>, standard base64 without padding.
_ENCODED = re.compile(
    r"\$argon2id\$v=19\$m=([0-9]{1,10}),t=([0-9]{1,10}),p=1"
    r"\$([A-Za-z0-9+/]{11,})\$([A-Za-z0-9+/]{6,})"
)
MAX_KIB = 256 * 1024  # a buffer kept per thread: larger hashes use malloc, freed after

_local = threading.local()
_buffers: list[_Buffer] = []
_buffers_lock = threading.Lock()


class _Buffer:
    """One thread's hashing memory; ``lock`` is held while a hash uses it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)  # shared would be shmem: no THP
        madvise = getattr(mmap, "MADV_HUGEPAGE", None)
        if madvise is not None:
            try:
                self.map.madvise(madvise)
            except OSError:  # no transparent huge pages here: 4 KiB pages then
                pass
        self.address = ffi.from_buffer(self.map)
        self.lock = threading.Lock()

    def release(self) -> None:
        """Give the pages back (they read as zeros when next used)."""
        self.map.madvise(mmap.MADV_DONTNEED)


def _allocate(memory: Any, size: int) -> int:
    buffer: _Buffer = _local.buffer
    if buffer.size < size:
        return int(lib.ARGON2_MEMORY_ALLOCATION_ERROR)
    memory[0] = ffi.cast("uint8_t *", buffer.address)
    return int(lib.ARGON2_OK)


def _free(memory: Any, size: int) -> None:
    """Kept for the thread's next hash (libargon2 has wiped it)."""


try:  # C function pointers to the two above (libffi closures)
    _callbacks: tuple[Any, Any] | None = (
        ffi.callback("int(uint8_t **, size_t)", _allocate),
        ffi.callback("void(uint8_t *, size_t)", _free),
    )
except (MemoryError, OSError):  # a system that forbids them: argon2-cffi's verify
    _callbacks = None


def _thread_buffer(size: int) -> _Buffer:
    buffer: _Buffer | None = getattr(_local, "buffer", None)
    if buffer is None or buffer.size < size:
        buffer = _Buffer(size)
        with _buffers_lock:
            if getattr(_local, "buffer", None) is not None:
                _buffers.remove(_local.buffer)
            _buffers.append(buffer)
        _local.buffer = buffer
    return buffer


def _b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def verify(encoded: str, password: bytes) -> bool | None:
    """True or False for an Argon2id hash this path takes; None for any other (the
    caller then asks argon2-cffi)."""
    found = _ENCODED.fullmatch(encoded)
    if found is None or _callbacks is None:
        return None
    m_cost, t_cost = int(found[1]), int(found[2])
    if m_cost > MAX_KIB or t_cost < 1:
        return None
    try:
        salt, digest = _b64(found[3]), _b64(found[4])
    except (binascii.Error, ValueError):
        return None
    out = ffi.new("uint8_t[]", len(digest))
    c_salt = ffi.new("uint8_t[]", salt)
    c_password = ffi.new("uint8_t[]", password)
    ctx = ffi.new(
        "argon2_context *",
        {
            "out": out,
            "outlen": len(digest),
            "pwd": c_password,
            "pwdlen": len(password),
            "salt": c_salt,
            "saltlen": len(salt),
            "secret": ffi.NULL,
            "secretlen": 0,
            "ad": ffi.NULL,
            "adlen": 0,
            "t_cost": t_cost,
            "m_cost": m_cost,
            "lanes": 1,
            "threads": 1,
            "version": lib.ARGON2_VERSION_13,
            "allocate_cbk": _callbacks[0],
            "free_cbk": _callbacks[1],
            "flags": lib.ARGON2_DEFAULT_FLAGS,
        },
    )
    # libargon2 takes at least 8 blocks of 1 KiB, else m_cost rounded down to a multiple
    # of 4: never more than this.
    buffer = _thread_buffer(max(m_cost, 8) * 1024)
    with buffer.lock:
        status = lib.argon2_ctx(ctx, lib.Argon2_id)
    if status != lib.ARGON2_OK:
        return None  # parameters libargon2 refuses: argon2-cffi tells the error
    return hmac.compare_digest(bytes(ffi.buffer(out, len(digest))), digest)


def release_idle() -> int:
    """Give back the pages of every buffer no hash is using; returns how many."""
    released = 0
    with _buffers_lock:
        buffers = list(_buffers)
    for buffer in buffers:
        if buffer.lock.acquire(blocking=False):
            try:
                buffer.release()
                released += 1
            finally:
                buffer.lock.release()
    return released
