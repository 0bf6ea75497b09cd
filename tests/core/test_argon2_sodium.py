"""core/argon2_sodium.py: libsodium's Argon2id answers exactly as argon2-cffi does, for
every hash it takes, from many threads at once; the hashes it makes verify with
argon2-cffi; every other hash is left to argon2-cffi."""

from __future__ import annotations

import threading

from argon2 import PasswordHasher, Type
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core import argon2_sodium
from bastion.core.passwords import Argon2Params, Hasher

BASTION = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, type=Type.ID)


@settings(max_examples=40, deadline=None)
@given(
    password=st.text(max_size=40),
    other=st.text(max_size=40),
    memory=st.integers(min_value=8, max_value=2048),
    time_cost=st.integers(min_value=1, max_value=3),
    salt_len=st.integers(min_value=8, max_value=32),
    hash_len=st.integers(min_value=16, max_value=48),
)
def test_answers_as_argon2_cffi_does(
    password: str, other: str, memory: int, time_cost: int, salt_len: int, hash_len: int
) -> None:
    hasher = PasswordHasher(
        time_cost=time_cost, memory_cost=memory, parallelism=1, hash_len=hash_len,
        salt_len=salt_len, type=Type.ID,
    )  # fmt: skip
    encoded = hasher.hash(password)
    if len(encoded) > 127:  # more than PyNaCl passes on: argon2-cffi's to verify
        assert argon2_sodium.verify(encoded, password.encode()) is None
        return
    assert argon2_sodium.verify(encoded, password.encode()) is True
    expected = other == password
    assert argon2_sodium.verify(encoded, other.encode()) is expected


@settings(max_examples=10, deadline=None)
@given(password=st.text(max_size=40), time_cost=st.integers(1, 3), memory=st.integers(8, 4096))
def test_its_hashes_are_argon2_cffis(password: str, time_cost: int, memory: int) -> None:
    """Same format and parameters as argon2-cffi's: verifiable by it, and not flagged
    for rehash by a hasher with those parameters."""
    encoded = argon2_sodium.hash_password(password.encode(), time_cost, memory)
    assert encoded.startswith(f"$argon2id$v=19$m={memory},t={time_cost},p=1$")
    cffi = PasswordHasher(time_cost=time_cost, memory_cost=memory, parallelism=1, type=Type.ID)
    assert cffi.verify(encoded, password)
    assert not cffi.check_needs_rehash(encoded)
    assert argon2_sodium.hash_password(password.encode(), time_cost, memory) != encoded  # salt


def test_the_hasher_makes_and_reads_them() -> None:
    hasher = Hasher()
    encoded = hasher.hash("Correct-Horse-9!")
    assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert BASTION.verify(encoded, "Correct-Horse-9!")
    assert hasher.verify(encoded, "Correct-Horse-9!") and not hasher.verify(encoded, "nope")
    assert not hasher.needs_rehash(encoded)
    # Two lanes are argon2-cffi's to compute, in the same format.
    two = Hasher(Argon2Params(time_cost=1, memory_cost=19456, parallelism=2))
    assert two.hash("x").startswith("$argon2id$v=19$m=19456,t=1,p=2$")


def test_a_changed_digest_or_salt_does_not_verify() -> None:
    pw = b"Correct-Horse-9!"
    head, salt, digest = BASTION.hash(pw).rsplit("$", 2)
    flipped = "A" if digest[0] != "A" else "B"
    assert argon2_sodium.verify(f"{head}${salt}${flipped}{digest[1:]}", pw) is False
    flipped = "A" if salt[0] != "A" else "B"
    assert argon2_sodium.verify(f"{head}${flipped}{salt[1:]}${digest}", pw) is False
    # Well-shaped but undecodable (45 base64 characters, 4n + 1): refused, not verified.
    assert argon2_sodium.verify(f"{head}${salt}${digest}AA", pw) is False


def test_other_hashes_are_left_to_argon2_cffi() -> None:
    argon2i = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1, type=Type.I).hash("x")
    two_lanes = PasswordHasher(time_cost=1, memory_cost=64, parallelism=2, type=Type.ID).hash("x")
    short = PasswordHasher(time_cost=1, memory_cost=64, hash_len=8, type=Type.ID).hash("x")
    long_salt = PasswordHasher(time_cost=1, memory_cost=64, salt_len=64, type=Type.ID).hash("x")
    encoded = BASTION.hash("x")
    for other in (
        argon2i,
        two_lanes,
        short,  # under libsodium's 16-byte minimum output
        long_salt,  # over the 127 characters PyNaCl passes on
        encoded.replace("v=19", "v=16"),
        encoded.replace("m=19456", f"m={argon2_sodium.MAX_KIB + 1}"),
        encoded.replace("$argon2id$", "$argon2id$$"),
        "$2b$12$" + "a" * 53,
        "",
    ):
        assert argon2_sodium.verify(other, b"x") is None, other
    # ... and Hasher still verifies them there.
    hasher = Hasher()
    for other in (argon2i, two_lanes, short, long_salt):
        assert hasher.verify(other, "x") and not hasher.verify(other, "y"), other


def test_many_threads_at_once() -> None:
    """Each thread's answers stay right while others hash beside it."""
    small = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=Type.ID)
    hashes = {f"pw-{i}": small.hash(f"pw-{i}") for i in range(4)}
    wrong: list[str] = []

    def hash_many(password: str) -> None:
        for n in range(60):
            attempt = password if n % 2 == 0 else password + "!"
            if argon2_sodium.verify(hashes[password], attempt.encode()) is not (n % 2 == 0):
                wrong.append(attempt)

    workers = [threading.Thread(target=hash_many, args=(p,)) for p in hashes]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert wrong == []
