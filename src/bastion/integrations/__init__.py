"""What third-party apps import to use Bastion (SPEC §10): FastAPI dependencies, an ASGI
middleware with protected and auth-only routes, and a JWKS verifier for access tokens.

    from bastion.integrations import BastionAuth, BastionMiddleware, require_permission

    auth = BastionAuth.in_process()                  # or BastionAuth.remote("https://auth.example")
    app = FastAPI()
    auth.install(app)
    app.add_middleware(BastionMiddleware, auth=auth, protected=["/notes"], auth_only=["/login"])

    @app.get("/api/notes")
    async def notes(user: Identity = Depends(require_permission("read"))): ...

See docs/protecting-your-app.md.
"""

from bastion.integrations.auth import (
    AuthError,
    BastionAuth,
    current_user,
    require_permission,
    require_role,
    require_user,
)
from bastion.integrations.backends import Backend, InProcess, Remote
from bastion.integrations.identity import BastionUnavailable, Identity
from bastion.integrations.jwks import JwksVerifier
from bastion.integrations.middleware import BastionMiddleware

__all__ = [
    "AuthError",
    "Backend",
    "BastionAuth",
    "BastionMiddleware",
    "BastionUnavailable",
    "Identity",
    "InProcess",
    "JwksVerifier",
    "Remote",
    "current_user",
    "require_permission",
    "require_role",
    "require_user",
]
