"""Serve a benchmark's ASGI app the way ``bastion serve`` serves Bastion: uvicorn with the
same settings (uvloop and httptools by default, no proxy headers, no server header, no
access log) and, with several workers on Linux, a SO_REUSEPORT socket per worker. The
floors (bare_app.py) and FastAPI Users then get connections spread over their workers
exactly as Bastion does, so that 2-worker ratios compare servers, not luck.

    python bench/serve_like_bastion.py bare_app:app --port 8001 --workers 2

``src/bastion/web/serving.py`` is imported as a plain module (its directory on the path,
which spawned workers inherit), so this runs in an environment without Bastion too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "src" / "bastion" / "web"))

import serving  # noqa: E402
import uvicorn  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("app", help="module:attribute, importable from bench/")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    config = uvicorn.Config(
        args.app,
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        proxy_headers=False,
        server_header=False,
        log_level="warning",
        access_log=False,
    )
    if args.workers > 1 and serving.available():
        serving.run_workers(config)
    else:
        uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
