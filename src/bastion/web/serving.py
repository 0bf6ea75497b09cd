"""Several worker processes, each listening on a socket of its own (Linux ``SO_REUSEPORT``).

uvicorn's workers share one listening socket, and whichever worker wakes first accepts
what is waiting: a burst of new connections (a load balancer's keep-alive pool, wrk's
32) often all land on one worker, which then serves alone while the others idle for
as long as those connections live (measured: 13,000 session checks/s on two workers,
one of them idle, against 22,000 when both had connections). With a socket per worker
in one ``SO_REUSEPORT`` group the kernel spreads connections over the workers by a
hash of their addresses.

uvicorn's supervisor is kept (health checks, restarts, SIGHUP, SIGTTIN/SIGTTOU): each
worker is handed, in place of the shared socket, a stand-in that becomes the worker's
own socket when the spawned process unpickles it; a restarted worker binds a new one.
Sockets joining a group must belong to the same user, so no other account can take a
share of the port, and the parent first binds the port alone, which fails if anything
(another Bastion included) already listens there.
"""

from __future__ import annotations

import socket
import sys
from typing import Any, cast

import uvicorn
from uvicorn.supervisors import Multiprocess


def available() -> bool:
    """Linux spreads connections over a SO_REUSEPORT group; elsewhere the option means
    something else (BSD: the last socket wins), so uvicorn's shared socket is kept."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind_own_socket(host: str, port: int) -> socket.socket:
    """A listening socket of this worker in the port's SO_REUSEPORT group."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class _OwnSocket:
    """Stands for the worker's socket in the list the supervisor passes to a spawned
    worker: pickled in the parent as "bind one", unpickled in the worker as its own."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def __reduce__(self) -> tuple[Any, tuple[str, int]]:
        return bind_own_socket, (self.host, self.port)


def run_workers(config: uvicorn.Config) -> None:
    """Serve ``config.workers`` processes, each on its own socket; returns on SIGINT or
    SIGTERM, once the workers have stopped."""
    probe = config.bind_socket()  # logs uvicorn's error and exits if the port is taken
    probe.close()
    sockets = cast(list[socket.socket], [_OwnSocket(config.host, config.port)])
    Multiprocess(config, sockets=sockets).run()
