"""Safe redirect targets (SPEC §2): only same-site paths are honoured."""

from __future__ import annotations

from urllib.parse import urlsplit


def safe_redirect(target: str | None, default: str = "/") -> str:
    """Return ``target`` when it is a same-site path like ``/x``, otherwise ``default``.

    Refused: absolute URLs, scheme-relative ``//host``, ``/\\host`` (browsers treat the
    backslash as a slash), control characters and whitespace that browsers strip.
    """
    if not target or not isinstance(target, str) or len(target) > 2048:
        return default
    if not target.startswith("/") or target.startswith("//"):
        return default
    if "\\" in target or any(ord(c) < 0x21 or ord(c) == 0x7F for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target
