"""Session rows: only the SHA-256 of the token is stored (SPEC §7)."""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import weakref
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, and_, bindparam, delete, func, select, update
from sqlalchemy.engine import RowMapping, make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.store.db import Database
from bastion.store.tables import UTCDateTime, sessions, users

# Built once: this is the hot path of every authenticated request.
_LOOKUP = (
    select(
        sessions.c.id.label("session_id"),
        sessions.c.expires_at,
        sessions.c.last_active_at,
        sessions.c.created_at.label("session_created_at"),
        users,
    )
    .join(users, users.c.id == sessions.c.user_id)
    .where(sessions.c.token_hash == bindparam("h"))
)
_TOUCH = (
    update(sessions)
    .where(and_(sessions.c.id == bindparam("sid"), sessions.c.last_active_at < bindparam("before")))
    .values(last_active_at=bindparam("now"))
)


async def insert(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(sessions.insert().values(**values))


async def lookup(conn: AsyncConnection, token_hash: str) -> RowMapping | None:
    """Session joined with its user, by token hash."""
    return (await conn.execute(_LOOKUP, {"h": token_hash})).mappings().first()


class DirectReader:
    """Hot-path reads straight on the driver (docs/performance.md).

    SQLAlchemy's async layer costs more than the query itself here: on SQLite each call
    hops to aiosqlite's thread several times (connect, cursor, execute, fetch, close,
    rollback), on PostgreSQL the pool adds a ROLLBACK round trip per checkout. So:

    - SQLite: one plain ``sqlite3`` connection per process, autocommit and read-only,
      queried on the event loop. An indexed read takes tens of microseconds and, in WAL
      mode, never waits for writers; should it ever meet a lock it gives up within
      ``SQLITE_TIMEOUT`` and the caller falls back to the engine.
    - PostgreSQL: a small asyncpg pool whose connections only ever run these prepared
      SELECTs, in autocommit, so releasing one needs no reset round trip.

    Statements are SQLAlchemy Core, compiled once for the engine's dialect, and values
    pass through the same column types both ways, so rows equal the engine's. Use it
    only for single-row SELECTs that must see committed data, never inside a
    transaction (``first_direct`` below), and on PostgreSQL for single-statement writes
    that are atomic by themselves (``first_direct_write``: the refresh rotation).
    """

    SQLITE_TIMEOUT = 0.2
    PG_POOL_SIZE = 4

    def __init__(self, db: Database) -> None:
        self.dialect = db.reader.dialect
        self.url = make_url(db.url)
        self.is_sqlite = db.is_sqlite
        self.sqlite: sqlite3.Connection | None = None
        self.pool: Any = None
        self.failed = False
        self.lock = asyncio.Lock()
        self.prepared: dict[Any, _Prepared] = {}

    def _prepare(self, stmt: Select[Any]) -> _Prepared:
        found = self.prepared.get(stmt)
        if found is None:
            found = self.prepared[stmt] = _Prepared(stmt, self.dialect)
        return found

    async def first(self, stmt: Select[Any], params: dict[str, Any]) -> LazyRow | None:
        """The first row as a dict, or None; raises LookupError when this reader cannot
        answer (the caller then asks the engine)."""
        if self.failed:
            raise LookupError
        prep = self._prepare(stmt)
        args = prep.args(params)
        if self.is_sqlite:
            values = self._sqlite_first(prep.sql, args)
        else:
            if self.pool is None:
                await self._open_pool()
            values = await self.pool.fetchrow(prep.sql, *args)
        return None if values is None else prep.row(values)

    def _sqlite_first(self, sql: str, args: tuple[Any, ...]) -> Any:
        if self.sqlite is None:
            path = self.url.database
            if not path or path == ":memory:" or path.startswith("file:"):
                self.failed = True
                raise LookupError
            conn = sqlite3.connect(
                path, timeout=self.SQLITE_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA query_only=ON")
            self.sqlite = conn
        try:
            return self.sqlite.execute(sql, args).fetchone()
        except sqlite3.OperationalError as exc:  # locked or busy: let the engine wait
            raise LookupError from exc

    async def _open_pool(self) -> None:
        async with self.lock:
            if self.pool is not None:
                return
            dsn = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
            pool = _PgPool(dsn, self.PG_POOL_SIZE)
            try:
                await pool.start()
            except Exception as exc:  # an URL only SQLAlchemy understands: use the engine
                self.failed = True
                raise LookupError from exc
            self.pool = pool

    async def close(self) -> None:
        if self.sqlite is not None:
            self.sqlite.close()
            self.sqlite = None
        if self.pool is not None:
            await self.pool.close()
            self.pool = None


class _Prepared:
    """One statement compiled for one dialect, with its bind and result processors."""

    def __init__(self, stmt: Select[Any], dialect: Any) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.compiled = compiled
        self.sql = str(compiled)
        self.order = list(compiled.positiontup or [])
        self.bind_procs = {
            name: compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in self.order
        }
        self.keys = list(stmt.selected_columns.keys())
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.procs: list[Callable[[Any], Any] | None] = [
            _fast_sqlite_time
            if dialect.name == "sqlite" and isinstance(c.type, UTCDateTime)
            else c.type.dialect_impl(dialect).result_processor(dialect, None)
            for c in stmt.selected_columns
        ]

    def args(self, params: dict[str, Any]) -> tuple[Any, ...]:
        values = self.compiled.construct_params(params)
        out = []
        for name in self.order:
            v = values[name]
            proc = self.bind_procs[name]
            out.append(proc(v) if proc is not None else v)
        return tuple(out)

    def row(self, values: Any) -> LazyRow:
        return LazyRow(self, values)


class LazyRow(Mapping[str, Any]):
    """A row whose values are converted (times parsed) when first read: a request
    reads a handful of the user's twenty columns."""

    __slots__ = ("_prep", "_raw", "_done")

    def __init__(self, prep: _Prepared, raw: Any) -> None:
        self._prep = prep
        self._raw = raw
        self._done: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        try:
            return self._done[key]
        except KeyError:
            pass
        i = self._prep.index[key]  # KeyError for an unknown column, like RowMapping
        proc = self._prep.procs[i]
        value = self._raw[i] if proc is None else proc(self._raw[i])
        self._done[key] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._prep.keys)

    def __len__(self) -> int:
        return len(self._prep.keys)

    def __repr__(self) -> str:
        return f"LazyRow({dict(self)!r})"


def _fast_sqlite_time(value: Any) -> datetime | None:
    """UTCDateTime on SQLite (stored naive UTC, ISO format), without the regex."""
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


class _PgPool:
    """A few asyncpg connections that only run autocommit SELECTs: checking one out is
    popping a list (asyncpg's own pool costs about 40 µs of CPU per query in timeouts,
    resets and bookkeeping, more than the query's share on the client)."""

    def __init__(self, dsn: str, size: int) -> None:
        self.dsn = dsn
        self.size = size
        self.idle: list[Any] = []
        self.opened = 0
        self.waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.closed = False

    async def start(self) -> None:
        self.opened += 1
        try:
            self.idle.append(await self._connect())
        except BaseException:
            self.opened -= 1
            raise

    async def _connect(self) -> Any:
        import asyncpg

        return await asyncpg.connect(self.dsn)

    async def _acquire(self) -> Any:
        while self.idle:
            conn = self.idle.pop()
            if not conn.is_closed():
                return conn
            self.opened -= 1
        if self.opened < self.size:
            return await self._open()
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            conn = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed over, then cancelled
                self._release(waiter.result(), broken=False)
            raise
        if conn is None:  # a connection broke: open its replacement
            return await self._open()
        return conn

    async def _open(self) -> Any:
        """A new connection, counted against ``size`` while it opens."""
        self.opened += 1
        try:
            return await self._connect()
        except BaseException:
            self.opened -= 1
            raise

    def _release(self, conn: Any, broken: bool) -> None:
        if conn is None:
            return
        if broken or self.closed or conn.is_closed():
            conn.terminate()
            self.opened -= 1
            conn = None  # the next waiter, if any, opens a new one
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is not None:
            self.idle.append(conn)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        conn = await self._acquire()
        broken = True
        try:
            row = await conn.fetchrow(sql, *args)
            broken = False
            return row
        finally:
            self._release(conn, broken)

    async def close(self) -> None:
        self.closed = True
        idle, self.idle = self.idle, []
        for conn in idle:
            await conn.close()


_readers: weakref.WeakKeyDictionary[Database, DirectReader] = weakref.WeakKeyDictionary()


def _reader_for(db: Database) -> DirectReader:
    reader = _readers.get(db)
    if reader is None:
        reader = _readers[db] = DirectReader(db)
    return reader


async def first_direct(
    db: Database, stmt: Select[Any], params: dict[str, Any]
) -> RowMapping | LazyRow | None:
    """The first row of a single-row hot-path SELECT, through the DirectReader, or the
    engine when the reader cannot answer."""
    reader = _reader_for(db)
    try:
        return await reader.first(stmt, params)
    except LookupError:
        async with db.read() as conn:
            row: RowMapping | None = (await conn.execute(stmt, params)).mappings().first()
            return row


async def first_direct_write(
    db: Database, stmt: Select[Any], params: dict[str, Any]
) -> LazyRow | None:
    """A single-statement write that returns one row (PostgreSQL: autocommit, so the
    statement is its own transaction), through the DirectReader's connections. None
    when the reader cannot run it; the caller then takes its transactional path. Other
    errors propagate: the statement may or may not have committed."""
    reader = _reader_for(db)
    if reader.is_sqlite:
        return None
    try:
        return await reader.first(stmt, params)
    except LookupError:
        return None


async def lookup_direct(db: Database, token_hash: str) -> RowMapping | LazyRow | None:
    """``lookup`` on the hot path (every cookie-authenticated request)."""
    return await first_direct(db, _LOOKUP, {"h": token_hash})


async def close_direct(db: Database) -> None:
    reader = _readers.pop(db, None)
    if reader is not None:
        await reader.close()


async def touch(conn: AsyncConnection, session_id: str, now: datetime, before: datetime) -> None:
    await conn.execute(_TOUCH, {"sid": session_id, "now": now, "before": before})


async def delete_by_id(conn: AsyncConnection, session_id: str, user_id: str | None = None) -> int:
    stmt = delete(sessions).where(sessions.c.id == session_id)
    if user_id is not None:
        stmt = stmt.where(sessions.c.user_id == user_id)
    return (await conn.execute(stmt)).rowcount or 0


async def delete_for_user(conn: AsyncConnection, user_id: str, keep: str | None = None) -> int:
    stmt = delete(sessions).where(sessions.c.user_id == user_id)
    if keep is not None:
        stmt = stmt.where(sessions.c.id != keep)
    return (await conn.execute(stmt)).rowcount or 0


async def list_for_user(conn: AsyncConnection, user_id: str, now: datetime) -> list[RowMapping]:
    stmt = (
        select(sessions)
        .where(sessions.c.user_id == user_id, sessions.c.expires_at > now)
        .order_by(sessions.c.last_active_at.desc())
    )
    return list((await conn.execute(stmt)).mappings().all())


async def delete_expired(conn: AsyncConnection, now: datetime) -> int:
    return (await conn.execute(delete(sessions).where(sessions.c.expires_at <= now))).rowcount or 0


async def count_for_user(conn: AsyncConnection, user_id: str) -> int:
    stmt = select(func.count()).select_from(sessions).where(sessions.c.user_id == user_id)
    return int((await conn.execute(stmt)).scalar_one())
