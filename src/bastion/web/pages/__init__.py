"""Server-rendered pages (SPEC §12): one router that includes every page module."""

from __future__ import annotations

from fastapi import APIRouter

from bastion.web.pages import account, admin, public, steps

router = APIRouter(include_in_schema=False)
for module in (public, steps, account, admin):
    router.include_router(module.router)
