"""TOTP (RFC 6238) and backup codes: pure functions, the clock is a parameter.

- Codes: HOTP (RFC 4226 §5.3, dynamic truncation) over the time step
  ``floor((now - T0) / X)`` with T0 = 0 and X = 30 s, HMAC-SHA-1, 6 digits (SPEC §6).
  ``digits`` and ``digest`` are parameters so that the RFC 6238 Appendix B vectors
  (8 digits) can be checked.
- Secrets: 160 random bits (RFC 4226 §4 R6 recommends 160), base32 without padding,
  which is what authenticator apps expect in the ``otpauth://`` URI.
- Verification accepts the current step and one step either side (RFC 6238 §5.2 "at
  most one time step" of network delay and clock drift), and returns the matched step
  so the caller can refuse any step at or below the last accepted one: a code is
  accepted once (RFC 6238 §5.2, "the verifier MUST NOT accept the second attempt").
- Backup codes: 10 codes ``xxxx-xxxx`` from an alphabet without look-alikes (no 0/o,
  1/l/i), about 39.6 bits each; compared after removing case, dashes and spaces, and
  stored only as SHA-256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
from datetime import datetime
from urllib.parse import quote, urlencode

ISSUER = "Bastion"
DIGITS = 6
PERIOD = 30
SECRET_BYTES = 20  # 160 bits
WINDOW = 1  # steps accepted either side of the current one

BACKUP_CODE_COUNT = 10
BACKUP_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
BACKUP_GROUP = 4
BACKUP_GROUPS = 2
BACKUP_LENGTH = BACKUP_GROUP * BACKUP_GROUPS

Clock = datetime | float | int


def new_secret() -> str:
    """A fresh 160-bit secret, base32 (RFC 4648) without padding."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii").rstrip("=")


def decode_secret(secret_b32: str) -> bytes:
    """Base32 secret to key bytes; tolerant of case, spaces and missing padding."""
    cleaned = secret_b32.replace(" ", "").replace("-", "").upper()
    cleaned += "=" * (-len(cleaned) % 8)
    try:
        return base64.b32decode(cleaned)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("invalid base32 secret") from exc


def _timestamp(now: Clock) -> float:
    return now.timestamp() if isinstance(now, datetime) else float(now)


def time_step(now: Clock, period: int = PERIOD) -> int:
    """RFC 6238 §4.2: T = floor((Current Unix time - T0) / X), T0 = 0."""
    return int(_timestamp(now) // period)


def hotp(key: bytes, counter: int, digits: int = DIGITS, digest: str = "sha1") -> str:
    """RFC 4226 §5.3: HMAC over the 8-byte big-endian counter, dynamic truncation."""
    mac = hmac.new(key, struct.pack(">Q", counter), digest).digest()
    offset = mac[-1] & 0x0F
    binary = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(binary % (10**digits)).zfill(digits)


def code_at_step(secret_b32: str, step: int, digits: int = DIGITS, digest: str = "sha1") -> str:
    return hotp(decode_secret(secret_b32), step, digits, digest)


def totp(
    secret_b32: str,
    now: Clock,
    *,
    digits: int = DIGITS,
    period: int = PERIOD,
    digest: str = "sha1",
) -> str:
    """The code for the time ``now`` (a datetime or Unix seconds)."""
    return code_at_step(secret_b32, time_step(now, period), digits, digest)


def normalize_totp(code: str, digits: int = DIGITS) -> str | None:
    """Digits only (spaces and dashes dropped), or None when it cannot be a TOTP code."""
    cleaned = "".join(c for c in code if c not in " -\t")
    if len(cleaned) != digits or not cleaned.isascii() or not cleaned.isdigit():
        return None
    return cleaned


def verify(
    secret_b32: str,
    code: str,
    now: Clock,
    *,
    last_step: int | None = None,
    window: int = WINDOW,
    digits: int = DIGITS,
    period: int = PERIOD,
    digest: str = "sha1",
) -> int | None:
    """The time step ``code`` matches within ``window`` steps of ``now``, or None.

    Steps at or below ``last_step`` (the user's last accepted step) are refused, so a
    code, or an older one, cannot be replayed (RFC 6238 §5.2). The caller must still
    record the returned step atomically, since two requests may verify at once.
    Every candidate is compared in constant time, whether or not an earlier one matched.
    """
    wanted = normalize_totp(code, digits)
    if wanted is None:
        return None
    key = decode_secret(secret_b32)
    current = time_step(now, period)
    matched: int | None = None
    for step in range(current - window, current + window + 1):
        if step < 0:
            continue
        ok = hmac.compare_digest(hotp(key, step, digits, digest).encode(), wanted.encode())
        fresh = last_step is None or step > last_step
        if ok and fresh and matched is None:
            matched = step  # the earliest acceptable step burns the fewest future steps
    return matched


def provisioning_uri(
    secret_b32: str,
    account: str,
    issuer: str = ISSUER,
    *,
    digits: int = DIGITS,
    period: int = PERIOD,
) -> str:
    """``otpauth://totp/Issuer:account?secret=..&issuer=..`` (Google Authenticator Key
    URI format), with the issuer both as label prefix and parameter."""
    label = quote(f"{issuer}:{account}", safe=":@")
    query = urlencode(
        {
            "secret": secret_b32,
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": str(digits),
            "period": str(period),
        },
        quote_via=quote,
    )
    return f"otpauth://totp/{label}?{query}"


def qr_svg(uri: str, *, title: str = "QR code for your authenticator app") -> str:
    """The URI as an inline SVG QR code (error correction M), ready to embed in HTML."""
    import segno  # only MFA set-up draws QR codes: not loaded in every worker

    qr = segno.make_qr(uri, error="m")
    svg: str = qr.svg_inline(scale=4, border=4, dark="#000", light="#fff", title=title)
    # A standalone document (usable as an <img> or a file) needs the SVG namespace.
    if "xmlns=" not in svg.split(">", 1)[0]:
        svg = svg.replace("<svg", '<svg xmlns="http://www.w3.org/2000/svg"', 1)
    return svg


def new_backup_codes(count: int = BACKUP_CODE_COUNT) -> list[str]:
    """``count`` distinct codes formatted ``xxxx-xxxx``."""
    codes: list[str] = []
    while len(codes) < count:
        raw = "".join(secrets.choice(BACKUP_ALPHABET) for _ in range(BACKUP_LENGTH))
        code = "-".join(raw[i : i + BACKUP_GROUP] for i in range(0, BACKUP_LENGTH, BACKUP_GROUP))
        if code not in codes:
            codes.append(code)
    return codes


def normalize_backup_code(code: str) -> str | None:
    """Lower case without dashes or whitespace, or None when it cannot be a backup code."""
    cleaned = "".join(c for c in code.lower() if c != "-" and not c.isspace())
    if len(cleaned) != BACKUP_LENGTH or any(c not in BACKUP_ALPHABET for c in cleaned):
        return None
    return cleaned


def backup_code_hash(code: str, key: bytes | None = None) -> str:
    """What the database stores: HMAC-SHA256 of the normalized code under ``key`` (a key
    derived from SECRET_KEY, so a stolen database alone cannot be searched for the
    ~40-bit codes offline), or plain SHA-256 without a key."""
    normalized = normalize_backup_code(code)
    if normalized is None:
        raise ValueError("not a backup code")
    if key is None:
        return hashlib.sha256(normalized.encode("ascii")).hexdigest()
    return hmac.new(key, normalized.encode("ascii"), hashlib.sha256).hexdigest()
