"""One loader per stream at a time: a session-level Postgres advisory lock.

The lock belongs to the database session, so a worker killed with SIGKILL releases it when its
connection dies -- no lease to expire, no stale Redis key. A second run of the same stream waits up
to `timeout_s` (Postgres' `lock_timeout`) and then fails with `StreamLockedError` naming the holder.
The upsert's version guard covers whatever a lock cannot (a load that skipped the lock).
Taking the lock also checks that the database's migrations are this code's (ADR 0028).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from psycopg2 import errors
from psycopg2.extensions import TRANSACTION_STATUS_IDLE

from erp_sync.store.migrations import require_current_schema

log = logging.getLogger(__name__)


class StreamLockedError(RuntimeError):
    """Another run holds this stream's load lock."""


def stream_lock_key(source_system: str, stream: str) -> int:
    """A signed 64-bit advisory-lock key for one stream."""
    digest = hashlib.sha256(f"erp_sync:stream:{source_system}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_holder(conn: Any, key: int) -> int | None:
    """The backend pid holding the advisory lock `key` in this database, if any."""
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT pid FROM pg_locks
            WHERE locktype = 'advisory' AND granted AND database = (
                SELECT oid FROM pg_database WHERE datname = current_database())
              AND ((classid::bigint << 32) | objid::bigint) = %s
            """,
            (key,),
        )
        row = cur.fetchone()
    return int(row[0]) if row else None


@contextmanager
def stream_lock(conn: Any, source_system: str, stream: str, timeout_s: float = 600.0) -> Iterator[int]:
    """Hold the stream's load lock for the block; yields the lock key.

    `conn` must have no open transaction (the wait runs in a short transaction of its own); the lock
    survives the commits and rollbacks the block does on `conn`. A database whose migrations are not
    this code's raises `SchemaMismatchError` before the block runs.
    """
    if conn.autocommit or conn.info.transaction_status != TRANSACTION_STATUS_IDLE:
        raise RuntimeError("stream_lock needs a connection with autocommit off and no open transaction")
    key = stream_lock_key(source_system, stream)
    _acquire(conn, key, source_system, stream, timeout_s)
    try:
        require_current_schema(conn)  # every writer holds this lock before it writes (ADR 0028)
        yield key
    finally:
        _release(conn, key)


def _acquire(conn: Any, key: int, source_system: str, stream: str, timeout_s: float) -> None:
    timeout_ms = max(1, int(timeout_s * 1000))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
            if cur.fetchone()[0]:
                conn.commit()
                return
            log.info(
                "stream %s/%s is being loaded by postgres backend pid %s; waiting up to %gs for it",
                source_system, stream, lock_holder(conn, key), timeout_s,
            )  # fmt: skip
            cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{timeout_ms}ms",))
            cur.execute("SELECT pg_advisory_lock(%s)", (key,))
        conn.commit()
    except errors.LockNotAvailable as exc:
        conn.rollback()
        holder = lock_holder(conn, key)
        conn.rollback()
        raise StreamLockedError(
            f"stream {source_system}/{stream} is being loaded by another run "
            f"(postgres backend pid {holder}); gave up after {timeout_s:g}s"
        ) from exc


def _release(conn: Any, key: int) -> None:
    if conn.closed:
        return
    try:
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
        conn.commit()
    except Exception:  # noqa: S110 - a broken connection has released the lock already
        pass
