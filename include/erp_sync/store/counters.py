"""Batch ids from an atomic Redis counter that never goes back below Postgres.

`{ns}:batch_id` is INCRed atomically. Each call also passes the largest batch_id Postgres has
committed as a floor: a Lua script raises the counter to that floor first, so a flushed or replaced
Redis (counter gone or behind) can never hand out an id that `sync_batches` already holds.
"""

from __future__ import annotations

from typing import Any

_NEXT_ID = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if current < floor then
    redis.call('SET', KEYS[1], floor)
end
return redis.call('INCR', KEYS[1])
"""


def counter_key(namespace: str) -> str:
    return f"{namespace}:batch_id"


def committed_max_batch_id(conn: Any) -> int:
    """The largest batch_id in erp_sync.sync_batches (0 when none). Ends the read transaction."""
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT coalesce(max(batch_id), 0) FROM erp_sync.sync_batches")
            return int(cur.fetchone()[0])
    finally:
        conn.rollback()


def next_batch_id(redis: Any, namespace: str = "erpsync", conn: Any = None) -> int:
    """A fresh batch id, greater than every id handed out before and every id committed in Postgres.

    Without `conn` only the Redis counter is consulted (fine while Redis is never lost).
    """
    floor = committed_max_batch_id(conn) if conn is not None else 0
    return int(redis.eval(_NEXT_ID, 1, counter_key(namespace), floor))
