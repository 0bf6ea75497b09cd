"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp

from bastion.logs import configure_logging
from bastion.runtime import Bastion
from bastion.settings import Settings, load_settings
from bastion.web import errors
from bastion.web.api import auth, health
from bastion.web.api import sessions as sessions_api
from bastion.web.middleware import SecurityMiddleware

log = logging.getLogger("bastion")

ROUTERS = [health.router, auth.router, sessions_api.router]


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
        try:
            yield
        finally:
            for task in background:
                task.cancel()
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
        app.include_router(router)
    return app


# Coroutines run at start-up with the container; each may return a background task.
STARTUP_HOOKS: list = [sessions_api.warm_up]  # type: ignore[type-arg]


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
