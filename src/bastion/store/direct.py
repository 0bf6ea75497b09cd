"""Statements built once and run straight on the driver (docs/performance.md).

SQLAlchemy's async layer costs more than the queries themselves on the hot paths: on
SQLite each statement hops to aiosqlite's thread several times (cursor, execute, fetch,
close), on PostgreSQL the pool adds a ROLLBACK round trip per checkout, and everywhere
building, caching and compiling a statement and processing its result takes about ten
times the driver's own work. Statements here are SQLAlchemy Core, compiled once per
dialect, and values pass through the same column types both ways, so rows equal the
engine's.

Two uses:

- ``first_direct``: single-row SELECTs that must see committed data, never inside a
  transaction (session and bearer checks, the sign-in's reads), and on PostgreSQL
  ``first_direct_write`` for single-statement writes atomic by themselves (the refresh
  rotation).
- ``transaction``: a sequence of statements written as *steps* (a generator that yields
  ``Query`` objects and receives their rows), run as one transaction. The same steps run
  in a caller's SQLAlchemy transaction through ``run_in``, so each piece of SQL is
  written once and the sign-in's transaction and every other caller share it.
  Independent step sequences can run side by side (``together``): each round, their
  next queries go out as one ``Batch``, which PostgreSQL receives as one statement
  (every query a common table expression) and SQLite runs one after the other.

Connections, per process and database:

- SQLite: a read-only ``sqlite3`` connection queried on the event loop (an indexed read
  takes tens of microseconds and, in WAL mode, never waits for writers; should it meet
  a lock it gives up within ``SQLITE_TIMEOUT`` and the caller asks the engine), and a
  writer connection owned by one thread, where a whole transaction runs in one hop
  (``BEGIN IMMEDIATE``, the steps, ``COMMIT``), waiting for other processes' writers as
  the engine does.
- PostgreSQL: two small asyncpg pools (reads; transactions and one-statement writes),
  in autocommit, so releasing a connection needs no reset round trip.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import os
import re
import sqlite3
import weakref
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import bindparam
from sqlalchemy.engine import RowMapping, make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.store.db import SQLITE_BUSY_TIMEOUT_MS, Database, driver_dsn
from bastion.store.tables import UTCDateTime

try:
    import fcntl
except ImportError:  # Windows: SQLite's busy timeout alone (``_open_write_queue``)
    fcntl = None  # type: ignore[assignment]

T = TypeVar("T")


class Unavailable(Exception):
    """The driver cannot run this here (an in-memory SQLite database, a URL only
    SQLAlchemy understands, a lock met on the read-only connection): use the engine."""


@dataclass(frozen=True, slots=True)
class Query:
    """One statement of a transaction's steps: built once (module level), with this
    call's values. ``stmt`` may be a dict of statements by dialect name (upserts), where
    None means "nothing to run here". The step receives all rows (``rows=True``) or the
    first row or None."""

    stmt: Any
    params: Mapping[str, Any]
    rows: bool = False

    def for_dialect(self, name: str) -> Any:
        return self.stmt[name] if isinstance(self.stmt, dict) else self.stmt

    def nothing(self) -> Any:
        """What the step receives when there is nothing to run on this dialect."""
        return [] if self.rows else None


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def per_dialect(build: Callable[[Any], Any]) -> dict[str, Any]:
    """A statement built once for each dialect, from its ``insert`` (for ON CONFLICT)."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return {"sqlite": build(sqlite_insert), "postgresql": build(pg_insert)}


def insert_values(table: Any, insert: Any = None, skip: tuple[str, ...] = ()) -> Any:
    """``INSERT INTO table (every column but skip) VALUES (:column, ...)``, built once;
    fill the values with ``row_of``."""
    stmt = table.insert() if insert is None else insert(table)
    return stmt.values(
        {c.key: bindparam(c.key, type_=c.type) for c in table.c if c.key not in skip}
    )


def row_of(table: Any, skip: tuple[str, ...] = (), **values: Any) -> dict[str, Any]:
    """The parameters of ``insert_values``: every column, None where not given."""
    row = _empty_row(table, skip).copy()
    row.update(values)
    return row


@functools.cache
def _empty_row(table: Any, skip: tuple[str, ...]) -> dict[str, Any]:
    """Every column of ``table`` but ``skip``, as None: worked out once per table (the
    rows of every sign-in are built from these)."""
    return dict.fromkeys((c.key for c in table.c if c.key not in skip), None)


@dataclass(frozen=True, slots=True)
class Batch:
    """Queries that read nothing the others write, answered together: a tuple of their
    results, in order. On PostgreSQL they go out as one statement, one round trip, and
    share one snapshot (so none sees another's rows); elsewhere they run in order."""

    queries: tuple[Query, ...]


# A transaction body: yields queries, receives their results, returns its answer.
Steps = Generator[Query | Batch, Any, T]


def together(*parts: Steps[Any] | None) -> Steps[tuple[Any, ...]]:
    """Run independent step sequences side by side and return their answers in order
    (None for a part that is None). Each round sends the next query of every sequence
    still running as one ``Batch``: on PostgreSQL, three sequences of one query each
    cost one round trip instead of three. Only for sequences that do not read what the
    others write in this transaction, and that write different rows."""
    results: list[Any] = [None] * len(parts)
    pending: dict[int, Query] = {}

    def advance(i: int, answer: Any) -> None:
        part = parts[i]
        assert part is not None  # noqa: S101 - only running parts are advanced
        try:
            query = part.send(answer)
        except StopIteration as done:
            results[i] = done.value
            return
        if not isinstance(query, Query):
            raise TypeError("together() runs sequences of single queries")
        pending[i] = query

    for i, part in enumerate(parts):
        if part is not None:
            advance(i, None)
    while pending:
        round_, pending = pending, {}
        answers = yield Batch(tuple(round_.values()))
        for i, answer in zip(round_, answers, strict=True):
            advance(i, answer)
    return tuple(results)


async def _engine_query(conn: AsyncConnection, query: Query) -> Any:
    stmt = query.for_dialect(conn.dialect.name)
    if stmt is None:
        return query.nothing()
    result = await conn.execute(stmt, dict(query.params))
    if query.rows:
        return list(result.mappings().all()) if result.returns_rows else []
    return result.mappings().first() if result.returns_rows else None


async def run_in(conn: AsyncConnection, steps: Steps[T]) -> T:
    """Run ``steps`` in the caller's SQLAlchemy transaction."""
    try:
        query = next(steps)
        while True:
            value: Any
            if isinstance(query, Batch):
                value = tuple([await _engine_query(conn, q) for q in query.queries])
            else:
                value = await _engine_query(conn, query)
            query = steps.send(value)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


class Direct:
    """The driver-level connections of one database in this process."""

    SQLITE_TIMEOUT = 0.2
    # PostgreSQL connections, opened on demand: the reads get DB_POOL_SIZE (with 4, a
    # worker spent its time waiting for a free connection rather than on requests:
    # 9,800 session checks/s on two cores with 2 workers against 14,300 with 16), the
    # transactions a few (a sign-in's is short and hashing bounds their number).
    WRITE_POOL_SIZE = 4

    def __init__(self, db: Database) -> None:
        self.dialect = db.reader.dialect
        self.url = make_url(db.url)
        self.pool_sizes = {
            "pool": db.pool_size,
            "write_pool": min(self.WRITE_POOL_SIZE, db.pool_size),
        }
        self.is_sqlite = db.is_sqlite
        self.sqlite: sqlite3.Connection | None = None
        self.sqlite_writer: sqlite3.Connection | None = None
        self.sqlite_write_queue: int | None = None
        self.write_thread: ThreadPoolExecutor | None = None
        self.pool: Any = None
        self.write_pool: Any = None
        self.failed = False
        self.lock = asyncio.Lock()
        self.prepared: dict[Any, Prepared] = {}
        self.batches: dict[Any, _Batch] = {}
        self.batched: dict[tuple[Any, ...], PreparedBatch] = {}
        path = self.url.database
        if self.is_sqlite and (not path or path == ":memory:" or path.startswith("file:")):
            self.failed = True  # only the engine knows this database

    def _prepare(self, stmt: Any) -> Prepared:
        found = self.prepared.get(stmt)
        if found is None:
            found = self.prepared[stmt] = Prepared(stmt, self.dialect)
        return found

    async def first(self, stmt: Any, params: Mapping[str, Any]) -> LazyRow | None:
        """The first row as a dict, or None; raises Unavailable when this reader cannot
        answer (the caller then asks the engine)."""
        if self.failed:
            raise Unavailable
        prep = self._prepare(stmt)
        args = prep.args(params)
        if self.is_sqlite:
            values = self._sqlite_first(prep.sql, args)
        else:
            values = await (await self._pool("pool")).fetchrow(prep.sql, *args)
        return None if values is None else prep.row(values)

    async def first_batched(self, one: Any, many: Any, params: Mapping[str, Any]) -> LazyRow | None:
        """``first(one, params)`` on PostgreSQL, sent together with the other lookups of
        the same event-loop iteration as one ``many`` query: ``one``'s columns followed
        by the parameters' values, for the lists bound as ``<name>_list``. Raises
        Unavailable on SQLite (its reads cost no round trip) or when only the engine
        can answer."""
        if self.failed or self.is_sqlite:
            raise Unavailable
        batch = self.batches.get(many)
        if batch is None:
            batch = self.batches[many] = _Batch(
                self, self._prepare(one), self._prepare(many), tuple(params)
            )
        return await batch.get(tuple(params.values()))

    def _sqlite_first(self, sql: str, args: tuple[Any, ...]) -> Any:
        if self.sqlite is None:
            conn = sqlite3.connect(
                str(self.url.database),
                timeout=self.SQLITE_TIMEOUT,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA query_only=ON")
            self.sqlite = conn
        try:
            return self.sqlite.execute(sql, args).fetchone()
        except sqlite3.OperationalError as exc:  # locked or busy: let the engine wait
            raise Unavailable from exc

    async def transaction(self, steps: Steps[T], autocommit: bool = False) -> T:
        """Run ``steps`` as one transaction, committed when they return. Raises
        Unavailable, before running any step, when only the engine can. ``autocommit``:
        each statement is atomic by itself and a partial run is harmless, so PostgreSQL
        runs them without BEGIN and COMMIT (two round trips fewer)."""
        if self.failed:
            raise Unavailable
        if self.is_sqlite:
            if self.write_thread is None:
                self.write_thread = ThreadPoolExecutor(1, thread_name_prefix="bastion-sqlite-write")
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.write_thread, self._sqlite_transaction, steps)
        pool = await self._pool("write_pool")
        if autocommit:
            result: T = await pool.run(lambda conn: self._pg_steps(conn, steps))
        else:
            result = await pool.run(lambda conn: self._pg_transaction(conn, steps))
        return result

    def _sqlite_transaction(self, steps: Steps[T]) -> T:
        """In the writer thread: the whole transaction in one hop from the event loop."""
        conn = self.sqlite_writer
        if conn is None:
            conn = sqlite3.connect(
                str(self.url.database),
                timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            self.sqlite_writer = conn
            self.sqlite_write_queue = _open_write_queue(str(self.url.database))
        try:
            query = next(steps)  # what precedes the first statement runs before the lock
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        with _queued(self.sqlite_write_queue):
            return self._sqlite_locked(conn, query, steps)

    def _sqlite_locked(self, conn: sqlite3.Connection, query: Query | Batch, steps: Steps[T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            while True:
                value: Any
                if isinstance(query, Batch):
                    value = tuple([self._sqlite_query(conn, q) for q in query.queries])
                else:
                    value = self._sqlite_query(conn, query)
                query = steps.send(value)
        except StopIteration as done:
            result: T = done.value
        except BaseException:
            _rollback(conn)
            raise
        try:
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return result

    def _sqlite_query(self, conn: sqlite3.Connection, query: Query) -> Any:
        stmt = query.for_dialect("sqlite")
        if stmt is None:
            return query.nothing()
        prep = self._prepare(stmt)
        raw = conn.execute(prep.sql, prep.args(query.params)).fetchall()
        return prep.result(raw, query.rows)

    async def _pg_transaction(self, conn: Any, steps: Steps[T]) -> T:
        async with conn.transaction():
            return await self._pg_steps(conn, steps)

    async def _pg_steps(self, conn: Any, steps: Steps[T]) -> T:
        try:
            query = next(steps)
            while True:
                value: Any
                if isinstance(query, Batch):
                    value = await self._pg_batch(conn, query)
                else:
                    value = await self._pg_query(conn, query)
                query = steps.send(value)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def _pg_query(self, conn: Any, query: Query) -> Any:
        stmt = query.for_dialect("postgresql")
        if stmt is None:
            return query.nothing()
        prep = self._prepare(stmt)
        raw = await conn.fetch(prep.sql, *prep.args(query.params))
        return prep.result(raw, query.rows)

    async def _pg_batch(self, conn: Any, batch: Batch) -> tuple[Any, ...]:
        """The batch's queries as one statement (``PreparedBatch``)."""
        live = [
            (i, q, stmt)
            for i, q in enumerate(batch.queries)
            if (stmt := q.for_dialect("postgresql")) is not None
        ]
        results: list[Any] = [q.nothing() for q in batch.queries]
        if len(live) == 1:
            i, q, _ = live[0]
            results[i] = await self._pg_query(conn, q)
        elif live:
            stmts = tuple(stmt for _, _, stmt in live)
            prep = self.batched.get(stmts)
            if prep is None:
                prep = self.batched[stmts] = PreparedBatch([self._prepare(s) for s in stmts])
            args = prep.args([q.params for _, q, _ in live])
            row = await conn.fetchrow(prep.sql, *args)
            for (i, q, _), part, raw in zip(live, prep.parts, row, strict=True):
                results[i] = part.result(raw or [], q.rows)
        return tuple(results)

    async def _pool(self, which: str) -> Any:
        pool = getattr(self, which)
        if pool is not None:
            return pool
        async with self.lock:
            pool = getattr(self, which)
            if pool is not None:
                return pool
            pool = _PgPool(driver_dsn(self.url), self.pool_sizes[which])
            try:
                await pool.start()
            except Exception as exc:  # an URL only SQLAlchemy understands: use the engine
                self.failed = True
                raise Unavailable from exc
            setattr(self, which, pool)
            return pool

    async def close(self) -> None:
        if self.sqlite is not None:
            self.sqlite.close()
            self.sqlite = None
        if self.write_thread is not None:
            # Closed in its own thread, after a transaction that may still be running.
            if self.sqlite_writer is not None:
                self.write_thread.submit(self.sqlite_writer.close)
                self.sqlite_writer = None
            if self.sqlite_write_queue is not None:
                self.write_thread.submit(os.close, self.sqlite_write_queue)
                self.sqlite_write_queue = None
            self.write_thread.shutdown(wait=False)
            self.write_thread = None
        for name in ("pool", "write_pool"):
            pool = getattr(self, name)
            if pool is not None:
                await pool.close()
                setattr(self, name, None)


class _Batch:
    """Lookups by one key gathered for one round trip. Requests that arrive together
    (one epoll wake-up of many connections) start in the same loop iteration; the first
    starts the query's task, which runs behind the others, so that under load one query
    and one backend wake-up serve them all, and alone a lookup waits for nothing."""

    def __init__(self, direct: Direct, one: Prepared, many: Prepared, names: tuple[str, ...]):
        self.direct = direct
        self.one = one
        self.many = many
        self.names = names
        self.waiting: dict[Any, list[asyncio.Future[Any]]] = {}
        self.task: asyncio.Task[None] | None = None

    async def get(self, key: Any) -> LazyRow | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self.waiting:
            # Its first step runs after the tasks already ready (the other requests of
            # this wake-up); kept referenced, as the loop holds tasks only weakly.
            self.task = loop.create_task(self._run())
        self.waiting.setdefault(key, []).append(future)
        result: LazyRow | None = await future
        return result

    async def _run(self) -> None:
        batch, self.waiting = self.waiting, {}
        try:
            pool = await self.direct._pool("pool")
            lists = {f"{n}_list": [key[i] for key in batch] for i, n in enumerate(self.names)}
            args = self.many.args(lists)
            records = await pool.run(lambda conn: conn.fetch(self.many.sql, *args))
        except BaseException as exc:  # every waiter gets the error (or Unavailable)
            for futures in batch.values():
                for f in futures:
                    if not f.done():
                        f.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        width = len(self.names)
        found = {tuple(record[-width:]): record for record in records}
        for key, futures in batch.items():
            record = found.get(key)
            for f in futures:
                if not f.done():  # a waiter whose request was cancelled
                    f.set_result(None if record is None else self.one.row(record))


class Prepared:
    """One statement compiled for one dialect, with its bind and result processors."""

    def __init__(self, stmt: Any, dialect: Any) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.compiled = compiled
        self.sql = str(compiled)
        self.order = list(compiled.positiontup or [])
        self.bind_procs = {
            name: compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in self.order
        }
        # What ``construct_params`` would do, worked out once: per positional bind, the
        # caller's key, or the value fixed in the statement (``case(..., 1)``, LIMIT).
        fixed = compiled.construct_params({}, _check=False)
        self.plan: list[tuple[str, bool, Any, Callable[[Any], Any] | None]] = []
        for name in self.order:
            bind = compiled.binds[name]
            self.plan.append((bind.key, bind.required, fixed.get(name), self.bind_procs[name]))
        columns = list(getattr(stmt, "exported_columns", ()))  # RETURNING of DML too
        self.keys = [c.key for c in columns]
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.procs: list[Callable[[Any], Any] | None] = [
            _fast_sqlite_time
            if dialect.name == "sqlite" and isinstance(c.type, UTCDateTime)
            else c.type.dialect_impl(dialect).result_processor(dialect, None)
            for c in columns
        ]

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """The driver's positional arguments for ``params`` (bind key -> value)."""
        out = []
        for key, required, fixed, proc in self.plan:
            if key in params:
                value = params[key]
            elif required:
                raise KeyError(f"a value is required for bind parameter {key!r}")
            else:
                value = fixed
            out.append(proc(value) if proc is not None else value)
        return tuple(out)

    def row(self, values: Any) -> LazyRow:
        return LazyRow(self, values)

    def result(self, raw: list[Any], rows: bool) -> Any:
        """What a step receives: all rows, or the first row or None."""
        if rows:
            return [LazyRow(self, r) for r in raw]
        return LazyRow(self, raw[0]) if raw and self.keys else None


class PreparedBatch:
    """Several statements as one PostgreSQL statement: each becomes a common table
    expression (its parameters renumbered after the previous ones'), and the answer is
    one row holding, per statement, the array of its rows as records (NULL for a
    statement that returns none). Data-modifying CTEs all run, referenced or not, and
    see the same snapshot; each record decodes with its columns' own types, so
    ``Prepared.result`` reads it as it reads a row."""

    PARAM = re.compile(r"\$(\d+)")

    def __init__(self, parts: list[Prepared]) -> None:
        self.parts = parts
        ctes, answers = [], []
        offset = 0
        for n, part in enumerate(parts):
            numbers = {int(m) for m in self.PARAM.findall(part.sql)}
            if numbers != set(range(1, len(part.order) + 1)):  # a "$" in a literal
                raise ValueError(f"cannot renumber the parameters of {part.sql!r}")
            sql = self.PARAM.sub(functools.partial(_renumbered, offset), part.sql)
            ctes.append(f"b{n} AS ({sql})")
            # Composed of compiled statements and CTE names only: no value is in the text.
            answers.append(f"ARRAY(SELECT b{n} FROM b{n})" if part.keys else "NULL")  # noqa: S608
            offset += len(part.order)
        self.sql = f"WITH {', '.join(ctes)} SELECT {', '.join(answers)}"

    def args(self, params: list[Mapping[str, Any]]) -> tuple[Any, ...]:
        out: list[Any] = []
        for part, p in zip(self.parts, params, strict=True):
            out.extend(part.args(p))
        return tuple(out)


def _renumbered(offset: int, match: re.Match[str]) -> str:
    return f"${int(match.group(1)) + offset}"


_UNREAD = object()  # LazyRow: a column not converted yet


class LazyRow(Mapping[str, Any]):
    """A row whose values are converted (times parsed) when first read: a request
    reads a handful of the user's twenty columns."""

    __slots__ = ("_prep", "_raw", "_done")

    def __init__(self, prep: Prepared, raw: Any) -> None:
        self._prep = prep
        self._raw = raw
        self._done: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        done = self._done
        value = done.get(key, _UNREAD)
        if value is _UNREAD:
            i = self._prep.index[key]  # KeyError for an unknown column, like RowMapping
            proc = self._prep.procs[i]
            value = done[key] = self._raw[i] if proc is None else proc(self._raw[i])
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._prep.keys)

    def __len__(self) -> int:
        return len(self._prep.keys)

    def __repr__(self) -> str:
        return f"LazyRow({dict(self)!r})"

    @property
    def raw(self) -> Any:
        """The row as the driver returned it (a tuple, or asyncpg's Record)."""
        return self._raw


def _fast_sqlite_time(value: Any) -> datetime | None:
    """UTCDateTime on SQLite (stored naive UTC, ISO format), without the regex."""
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _open_write_queue(database: str) -> int | None:
    """A lock file beside the database on which the writer threads of all processes queue,
    blocked in the kernel, before SQLite's own write lock. SQLite's busy handler makes a
    waiting writer sleep up to 100 ms at a time while another process takes the lock
    again and again: refresh grants on 2 workers had a p99 of 0.7-1.7 s. None where
    ``fcntl`` is missing (Windows): SQLite's busy timeout alone then."""
    if fcntl is None:
        return None
    return os.open(database + "-bastion-write", os.O_RDWR | os.O_CREAT, 0o600)


@contextlib.contextmanager
def _queued(fd: int | None) -> Iterator[None]:
    """Hold the write queue for one transaction. Two byte locks make a turnstile: a
    writer holds the first while it waits for the second, so the writer that just
    released the second cannot take it straight back (it waits at the first): under
    contention the processes take turns. One writer thread a process, so the locks'
    per-process ownership is enough; a process that dies releases them."""
    if fd is None:
        yield
        return
    fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, 1)
    finally:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)
    try:
        yield
    finally:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 1)


class _PgPool:
    """A few asyncpg connections in autocommit (transactions are begun explicitly):
    checking one out is popping a list (asyncpg's own pool costs about 40 µs of CPU per
    query in timeouts, resets and bookkeeping, more than the query's share here)."""

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
        return await self.run(lambda conn: conn.fetchrow(sql, *args))

    async def run(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """``work(connection)`` on a pooled connection; one that failed is replaced."""
        conn = await self._acquire()
        broken = True
        try:
            result = await work(conn)
            broken = False
            return result
        finally:
            self._release(conn, broken)

    async def close(self) -> None:
        self.closed = True
        idle, self.idle = self.idle, []
        for conn in idle:
            await conn.close()


_directs: weakref.WeakKeyDictionary[Database, Direct] = weakref.WeakKeyDictionary()


def direct_for(db: Database) -> Direct:
    found = _directs.get(db)
    if found is None:
        found = _directs[db] = Direct(db)
    return found


async def first_direct(
    db: Database, stmt: Any, params: Mapping[str, Any]
) -> RowMapping | LazyRow | None:
    """The first row of a single-row SELECT, on the driver, or the engine's when the
    driver cannot answer."""
    try:
        return await direct_for(db).first(stmt, params)
    except Unavailable:
        async with db.read() as conn:
            row: RowMapping | None = (await conn.execute(stmt, dict(params))).mappings().first()
            return row


async def first_direct_batched(
    db: Database, one: Any, many: Any, params: Mapping[str, Any]
) -> RowMapping | LazyRow | None:
    """``first_direct(db, one, params)``, batched with the lookups of the same loop
    iteration on PostgreSQL (``Direct.first_batched``)."""
    found = direct_for(db)
    if not found.is_sqlite:  # SQLite's read is a function call: nothing to batch
        try:
            return await found.first_batched(one, many, params)
        except Unavailable:
            pass
    return await first_direct(db, one, params)


async def first_direct_write(db: Database, stmt: Any, params: Mapping[str, Any]) -> LazyRow | None:
    """A single-statement write that returns one row (PostgreSQL: autocommit, so the
    statement is its own transaction). None when the driver cannot run it; the caller
    then takes its transactional path. Other errors propagate: the statement may or may
    not have committed."""
    direct = direct_for(db)
    if direct.is_sqlite:
        return None
    try:
        return await direct.first(stmt, params)
    except Unavailable:
        return None


async def transaction(db: Database, steps: Steps[T], autocommit: bool = False) -> T:
    """``steps`` as one transaction on the driver, or in the engine's when the driver
    cannot run them (``Direct.transaction`` for ``autocommit``)."""
    try:
        return await direct_for(db).transaction(steps, autocommit)
    except Unavailable:
        async with db.write() as conn:
            return await run_in(conn, steps)


async def close_direct(db: Database) -> None:
    found = _directs.pop(db, None)
    if found is not None:
        await found.close()
