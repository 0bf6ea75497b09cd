"""The login floor: bare Argon2id verifies with Bastion's parameters (m=19456 KiB, t=2,
p=1) in N threads for S seconds. Prints: verifies, seconds, CPU seconds.

    argon2_floor.py N S           argon2-cffi's verify, as is (the target's floor)
    argon2_floor.py N S bastion   Bastion's verify (core/argon2_sodium.py: libsodium's
                                  Argon2id, AVX2/AVX-512 where the CPU has them), for
                                  comparison
"""

from __future__ import annotations

import sys
import threading
import time

from argon2 import PasswordHasher, Type

PASSWORD = "Correct-Horse-9!"


def main() -> None:
    threads, seconds = int(sys.argv[1]), float(sys.argv[2])
    ph = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, type=Type.ID)
    stored = ph.hash(PASSWORD)
    verify = ph.verify
    if sys.argv[3:] == ["bastion"]:
        from bastion.core import argon2_sodium

        def verify(stored: str, password: str) -> bool:
            assert argon2_sodium.verify(stored, password.encode())  # noqa: S101
            return True

    counts = [0] * threads
    start = time.monotonic()
    deadline = start + seconds

    def work(i: int) -> None:
        while time.monotonic() < deadline:
            verify(stored, PASSWORD)
            counts[i] += 1

    cpu0 = time.process_time()
    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    print(sum(counts), time.monotonic() - start, time.process_time() - cpu0)


if __name__ == "__main__":
    main()
