"""core/argon2_memory.py: verification in per-thread memory answers exactly as
argon2-cffi does, for every hash it takes, with its memory given back and reused, from
many threads at once; every other hash is left to argon2-cffi."""

from __future__ import annotations

import threading

from argon2 import PasswordHasher, Type
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core import argon2_memory
from bastion.core.passwords import Hasher

BASTION = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, type=Type.ID)


@settings(max_examples=40, deadline=None)
@given(
    password=st.text(max_size=40),
    other=st.text(max_size=40),
    memory=st.integers(min_value=8, max_value=2048),
    time_cost=st.integers(min_value=1, max_value=3),
    salt_len=st.integers(min_value=8, max_value=32),
    hash_len=st.integers(min_value=4, max_value=64),
)
def test_answers_as_argon2_cffi_does(
    password: str, other: str, memory: int, time_cost: int, salt_len: int, hash_len: int
) -> None:
    hasher = PasswordHasher(
        time_cost=time_cost, memory_cost=memory, parallelism=1, hash_len=hash_len,
        salt_len=salt_len, type=Type.ID,
    )  # fmt: skip
    encoded = hasher.hash(password)
    assert argon2_memory.verify(encoded, password.encode()) is True
    expected = other == password
    assert argon2_memory.verify(encoded, other.encode()) is expected


def test_a_changed_digest_or_salt_does_not_verify() -> None:
    pw = b"Correct-Horse-9!"
    head, salt, digest = BASTION.hash(pw).rsplit("$", 2)
    flipped = "A" if digest[0] != "A" else "B"
    assert argon2_memory.verify(f"{head}${salt}${flipped}{digest[1:]}", pw) is False
    flipped = "A" if salt[0] != "A" else "B"
    assert argon2_memory.verify(f"{head}${flipped}{salt[1:]}${digest}", pw) is False


def test_other_hashes_are_left_to_argon2_cffi() -> None:
    argon2i = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1, type=Type.I).hash("x")
    two_lanes = PasswordHasher(time_cost=1, memory_cost=64, parallelism=2, type=Type.ID).hash("x")
    encoded = BASTION.hash("x")
    for other in (
        argon2i,
        two_lanes,
        encoded.replace("v=19", "v=16"),
        encoded.replace("m=19456", f"m={argon2_memory.MAX_KIB + 1}"),
        encoded + "AA",  # 45 base64 characters (4n + 1) do not decode
        encoded.replace("$argon2id$", "$argon2id$$"),
        "$2b$12$" + "a" * 53,
        "",
    ):
        assert argon2_memory.verify(other, b"x") is None, other
    # ... and Hasher still verifies them there.
    hasher = Hasher()
    assert hasher.verify(argon2i, "x") and hasher.verify(two_lanes, "x")
    assert not hasher.verify(two_lanes, "y")


def test_memory_given_back_is_zeroed_and_reused_correctly() -> None:
    encoded = BASTION.hash("Correct-Horse-9!")
    assert argon2_memory.verify(encoded, b"Correct-Horse-9!")
    assert argon2_memory.release_idle() >= 1
    assert argon2_memory.verify(encoded, b"Correct-Horse-9!")
    assert not argon2_memory.verify(encoded, b"Correct-Horse-9?")


def test_threads_hashing_while_memory_is_released() -> None:
    """A release never touches a buffer in use: every answer stays right."""
    small = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=Type.ID)
    hashes = {f"pw-{i}": small.hash(f"pw-{i}") for i in range(4)}
    wrong: list[str] = []
    done = threading.Event()

    def hash_many(password: str) -> None:
        for n in range(60):
            attempt = password if n % 2 == 0 else password + "!"
            if argon2_memory.verify(hashes[password], attempt.encode()) is not (n % 2 == 0):
                wrong.append(attempt)

    def release_often() -> None:
        while not done.is_set():
            argon2_memory.release_idle()

    releaser = threading.Thread(target=release_often)
    releaser.start()
    workers = [threading.Thread(target=hash_many, args=(p,)) for p in hashes]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    done.set()
    releaser.join()
    assert wrong == []
