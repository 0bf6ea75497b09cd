"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp

from bastion.flows import housekeeping
from bastion.logs import configure_logging
from bastion.mail import worker as mail_worker
from bastion.runtime import Bastion, freeze_startup_objects
from bastion.settings import Settings, load_settings
from bastion.web import errors
from bastion.web.api import admin as admin_api
from bastion.web.api import auth, health
from bastion.web.api import mfa as mfa_api
from bastion.web.api import oauth as oauth_api
from bastion.web.api import recovery as recovery_api
from bastion.web.api import sessions as sessions_api
from bastion.web.api import tokens as tokens_api
from bastion.web.middleware import SecurityMiddleware
from bastion.web.pages import router as pages_router

log = logging.getLogger("bastion")

ROUTERS = [health.router, auth.router, sessions_api.router, mfa_api.router]
ROUTERS.append(admin_api.router)
ROUTERS.append(recovery_api.router)
ROUTERS.append(oauth_api.router)  # social login (SPEC §9)
ROUTERS.append(tokens_api.router)  # tokens for APIs, JWKS (SPEC §8)
ROUTERS.append(pages_router)  # server-rendered pages (SPEC §12)


def create_fastapi(settings: Settings) -> FastAPI:
    sessions_api.install_device_hook()  # sessions record browser, OS, location (SPEC §7)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bx = Bastion.create(settings)
        app.state.bastion = bx
        background = []
        for start in STARTUP_HOOKS:
            task = await start(bx)
            if task is not None:
                background.append(task)
        freeze_startup_objects()
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            if background:  # let them finish their clean-up (mail hands back its claims)
                await asyncio.wait(background, timeout=mail_worker.SHUTDOWN_SECONDS + 1)
            await bx.close()

    app = FastAPI(
        title="Bastion",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router, responses=errors.DOCUMENTED_ERRORS)
    return app


# Coroutines run at start-up with the container; each may return a background task.
STARTUP_HOOKS: list = [sessions_api.warm_up]  # type: ignore[type-arg]
STARTUP_HOOKS.append(mail_worker.start)  # outbox delivery (SPEC §11)
STARTUP_HOOKS.append(tokens_api.startup)  # JWT signing key, bearer verifier (SPEC §8)
STARTUP_HOOKS.append(housekeeping.start)  # expired sessions, tokens, counters


def create_app(settings: Settings | None = None) -> ASGIApp:
    """The ASGI app: FastAPI wrapped in the security middleware (outermost, so that even
    error responses carry the headers)."""
    settings = settings or load_settings()
    configure_logging(settings.log_level)
    inner = create_fastapi(settings)
    wrapped = SecurityMiddleware(
        inner,
        trusted=settings.trusted_proxies,
        max_body=settings.max_body_bytes,
        https=settings.base_url.startswith("https://"),
    )
    wrapped.fastapi = inner  # type: ignore[attr-defined]
    return wrapped


def app_from_env() -> ASGIApp:
    """Entry point for ``uvicorn --factory bastion.web.app:app_from_env`` (workers)."""
    return create_app()
