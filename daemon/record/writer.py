"""The single writer: one thread owns the write connection and commits in groups.

Request handlers submit a function of the connection and await its result. The
thread drains whatever is queued, runs each function inside its own savepoint of
one `BEGIN IMMEDIATE` transaction, commits once, and only then resolves the
waiting futures: an answer is never given for a write that is not committed. One
commit for many deliveries is what keeps the rate up when every delivery must
survive a crash.

Errors:
    StorageUnavailable  the transaction could not begin or commit (locked past the
                        busy timeout, read-only file, disk full): every delivery in
                        the batch is answered 503 and nothing of it is kept.
    any other exception raised by one function: its savepoint is rolled back, the
                        rest of the batch commits, and that caller gets the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from daemon import limits
from daemon.record import db

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], Any]


class StorageUnavailable(RuntimeError):
    """The database could not take the write; the caller should answer 503."""


@dataclass
class _Item:
    work: Work
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    result: Any = None
    error: BaseException | None = field(default=None)


_STOP = object()


class Writer:
    """Owns the write connection; `submit` runs work inside a committed transaction."""

    def __init__(self, path: Path, *, synchronous: str = "normal") -> None:
        self._path = path
        self._synchronous = synchronous
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None

    def open(self) -> list[str]:
        """Connect and migrate (in the caller's thread), then start the writer."""
        self._conn = db.connect(self._path, synchronous=self._synchronous)
        try:
            applied = db.migrate(self._conn)
        except BaseException:
            self.close()
            raise
        self._thread = threading.Thread(target=self._run, name="sqlite-writer")
        self._thread.start()
        return applied

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def submit(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if not self.alive:
            raise StorageUnavailable("the database writer is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Item(work, future, loop))
        return await future

    def close(self) -> None:
        """Finish what is queued, then stop the thread and close the connection."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self) -> None:
        assert self._conn is not None
        while True:
            batch, stopping = self._take_batch()
            if batch:
                self._commit(self._conn, batch)
            if stopping:
                return

    def _take_batch(self) -> tuple[list[_Item], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        while len(batch) < limits.WRITE_BATCH_MAX:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _commit(self, conn: sqlite3.Connection, batch: list[_Item]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            for item in batch:
                _run_in_savepoint(conn, item)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.error("database write failed, %d writes refused: %s", len(batch), exc)
            failure = StorageUnavailable(str(exc))
            for item in batch:
                item.error = failure
        # One wake-up per event loop for the whole batch, not one per item.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Item]] = {}
        for item in batch:
            by_loop.setdefault(item.loop, []).append(item)
        for loop, items in by_loop.items():
            # RuntimeError: the caller's loop is gone, so nobody is waiting.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve_all, items)


def _run_in_savepoint(conn: sqlite3.Connection, item: _Item) -> None:
    conn.execute("SAVEPOINT item")
    try:
        item.result = item.work(conn)
    except sqlite3.OperationalError:
        raise  # the database itself is failing: the whole batch is refused
    except Exception as exc:  # handed to the caller, not swallowed
        conn.execute("ROLLBACK TO item")
        item.error = exc
    conn.execute("RELEASE item")


def _resolve_all(items: list[_Item]) -> None:
    for item in items:
        if item.future.done():  # the caller stopped waiting
            continue
        if item.error is not None:
            item.future.set_exception(item.error)
        else:
            item.future.set_result(item.result)
