"""What the CLI does against the database, outside the web server."""

from __future__ import annotations

from bastion.core import secrets as core_secrets
from bastion.core.emails import is_valid_email, normalize_email
from bastion.core.passwords import policy_violations
from bastion.flows.context import utcnow
from bastion.runtime import Bastion
from bastion.settings import Settings
from bastion.store import audit
from bastion.store import users as user_store


async def create_user(
    settings: Settings, email: str, name: str | None, role: str, password: str
) -> str:
    """Raises ValueError with a one-line reason for bad input."""
    email = normalize_email(email)
    if not is_valid_email(email):
        raise ValueError(f"invalid email address: {email!r}")
    problems = policy_violations(password, policy=settings.password_policy, email=email)
    if problems:
        raise ValueError("weak password: " + "; ".join(problems))
    bx = Bastion.create(settings)
    try:
        now = utcnow()
        async with bx.db.read() as conn:
            if await user_store.get_by_email(conn, email) is not None:
                raise ValueError(f"a user with email {email} already exists")
        password_hash = await bx.hash_password(password)
        user_id = core_secrets.new_id()
        async with bx.db.write() as conn:
            await user_store.insert_new(
                conn,
                id=user_id,
                email=email,
                name=name,
                password_hash=password_hash,
                role=role,
                email_verified=True,
                now=now,
            )
            await audit.append(
                conn, "registered", now=now, user_id=user_id, details={"via": "cli", "role": role}
            )
        return user_id
    finally:
        await bx.close()
