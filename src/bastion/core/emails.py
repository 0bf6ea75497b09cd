"""Email syntax and normalization.

Normalization is deliberately simple (NFC, trim, lowercase) and never folds lookalikes
such as the dotless ``ı`` or full-width letters into ASCII: two different addresses must
never become one account, and mail always goes to the stored address, never the typed
one (the 2019 GitHub dotless-i takeover).
"""

from __future__ import annotations

import re
import unicodedata

MAX_EMAIL_LENGTH = 254
_LOCAL = re.compile(r"^[^\s@\"(),:;<>\[\]\\]{1,64}$")
_LABEL = re.compile(r"^(?!-)[\w-]{1,63}(?<!-)$", re.UNICODE)


def normalize_email(raw: str) -> str:
    return unicodedata.normalize("NFC", raw.strip()).lower()


def is_valid_email(email: str) -> bool:
    """Pragmatic RFC 5321 syntax check with no control characters or whitespace."""
    if not email or len(email) > MAX_EMAIL_LENGTH:
        return False
    if any(unicodedata.category(c).startswith("C") for c in email):
        return False
    local, sep, domain = email.rpartition("@")
    if not sep or not _LOCAL.match(local) or local.startswith(".") or local.endswith("."):
        return False
    if ".." in local:
        return False
    labels = domain.split(".")
    if len(labels) < 2 or len(domain) > 253:
        return False
    return all(_LABEL.match(label) and "_" not in label for label in labels)
