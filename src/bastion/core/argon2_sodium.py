"""Argon2id through libsodium (PyNaCl's bindings): the same hashes, computed faster.

argon2-cffi's wheels carry libargon2 built for baseline x86-64 (SSE2 only); libsodium
picks an AVX2 or AVX-512 implementation of Argon2's compression function when the CPU
has one, and maps each hash's memory fresh and unmaps it after, so the blocks leave the
process without a 19 MiB wipe (the kernel zeroes pages before reusing them). Measured on
a 2-core Intel Xeon VM with four threads: 82 verifies/s against argon2-cffi's 59 and
66 for the per-thread huge-page buffers this module replaced (docs/performance.md).

Both produce and read the PHC string format, ``$argon2id$v=19$m=…,t=…,p=1$salt$hash``
(16-byte salt, 32-byte hash), so hashes from either verify with the other. This path
takes Argon2id, version 19, one lane, memory up to ``MAX_KIB``; for anything else
``verify`` answers None and the caller asks argon2-cffi, which also says what is wrong
with a malformed hash. PyNaCl's C calls release the GIL, as argon2-cffi's do.
"""

from __future__ import annotations

import re

from nacl import bindings
from nacl import exceptions as nacl_errors

# $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>, standard base64 without padding; a
# salt of 8 bytes or more and a hash of 16 or more (libsodium's minimum output: a shorter
# one it would refuse as it refuses a wrong password, so it goes to argon2-cffi).
_ENCODED = re.compile(
    r"\$argon2id\$v=19\$m=([0-9]{1,10}),t=([0-9]{1,10}),p=1"
    r"\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{22,}"
)
MAX_KIB = 256 * 1024  # a stored hash asking for more memory goes to argon2-cffi
_ALG = bindings.crypto_pwhash_ALG_ARGON2ID13


def verify(encoded: str, password: bytes) -> bool | None:
    """True or False for an Argon2id hash this path takes; None for any other."""
    found = _ENCODED.fullmatch(encoded)
    if found is None or int(found[1]) > MAX_KIB or int(found[2]) < 1:
        return None
    try:
        return bindings.crypto_pwhash_str_verify(encoded.encode(), password)
    except nacl_errors.InvalidkeyError:  # libsodium's answer for a wrong password
        return False
    except (nacl_errors.ValueError, nacl_errors.TypeError):  # e.g. over 127 bytes long
        return None


def hash_password(password: bytes, time_cost: int, memory_kib: int) -> str:
    """A new Argon2id hash, one lane, with a random 16-byte salt."""
    return bindings.crypto_pwhash_str_alg(password, time_cost, memory_kib * 1024, _ALG).decode()
