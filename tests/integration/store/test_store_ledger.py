"""RedisLedger, the batch counter and the stream lock against real Redis and Postgres."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from typing import Any

import psycopg2
import pytest
from store_factories import invoice_batch, sample_invoices

from erp_sync.core.hashing import key_digest
from erp_sync.store.counters import counter_key, next_batch_id
from erp_sync.store.loader import load_batch
from erp_sync.store.locks import StreamLockedError, stream_lock, stream_lock_key

pytestmark = pytest.mark.integration


class CountingRedis:
    """The real client, counting the commands sent (each call or pipeline is one round trip)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.real, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted


def test_bulk_round_trips_and_hashed_keys(redis_client, redis_namespace):
    from erp_sync.store.ledger import CHUNK, RedisLedger

    rows = 2 * CHUNK + 500  # three chunks
    counting = CountingRedis(redis_client)
    ledger = RedisLedger(counting, namespace=redis_namespace)
    _, mapped, _ = invoice_batch(sample_invoices(rows))
    head = mapped.tables["ar_invoices"]

    changed, unchanged = ledger.split_unchanged("ar_invoices", head)
    assert (len(changed), unchanged) == (rows, 0)
    assert ledger.remember("ar_invoices", head) == rows
    changed, unchanged = ledger.split_unchanged("ar_invoices", head)
    assert (len(changed), unchanged) == (0, rows)
    assert counting.calls == Counter({"mget": 6, "pipeline": 3})  # one round trip per chunk

    keys = [k.decode() for k in redis_client.scan_iter(match=f"{redis_namespace}:ledger:*", count=1000)]
    assert len(keys) == rows
    assert not any("in_" in k or "stripe" in k for k in keys)  # no ids in clear
    assert f"{redis_namespace}:ledger:ar_invoices:{key_digest('stripe', 'in_00000')}" in keys


def test_split_names_only_the_stale_entries_for_eviction(ledger, redis_client):
    """A key the ledger does not hold cannot go stale: a cold load evicts nothing; a changed row
    evicts exactly its own entry, which is then gone from Redis."""
    _, mapped, _ = invoice_batch(sample_invoices(6))
    head = mapped.tables["ar_invoices"]
    cold = ledger.split("ar_invoices", head)
    assert (len(cold.candidates), cold.skipped, cold.stale_keys) == (6, 0, [])

    ledger.remember("ar_invoices", head.iloc[:4])
    edited = head.copy()
    edited.loc[edited.index[1], "row_sha256"] = "e" * 64
    split = ledger.split("ar_invoices", edited)
    assert sorted(split.candidates["source_id"]) == ["in_00001", "in_00004", "in_00005"]
    assert split.skipped == 3
    expected = f"{ledger.namespace}:ledger:ar_invoices:{key_digest('stripe', 'in_00001')}"
    assert split.stale_keys == [expected]
    assert redis_client.exists(expected) == 1
    assert ledger.evict_full_keys(split.stale_keys) == 1
    assert redis_client.exists(expected) == 0


def test_split_sees_changed_content_and_evict_forgets(ledger):
    _, mapped, _ = invoice_batch(sample_invoices(4))
    head = mapped.tables["ar_invoices"]
    ledger.remember("ar_invoices", head)
    edited = head.copy()
    edited.loc[edited.index[0], "row_sha256"] = "f" * 64
    changed, unchanged = ledger.split_unchanged("ar_invoices", edited)
    assert (list(changed["source_id"]), unchanged) == (["in_00000"], 3)
    assert ledger.evict("ar_invoices", ["in_00001", "in_00002"], source_system="stripe") == 2
    changed, unchanged = ledger.split_unchanged("ar_invoices", head)
    assert (sorted(changed["source_id"]), unchanged) == (["in_00001", "in_00002"], 2)


def test_rebuild_from_postgres_mirrors_postgres_exactly(conn, ledger, redis_client):
    key, mapped, pages = invoice_batch(sample_invoices(30))
    load_batch(conn, ledger, key, mapped, pages, batch_id=1, cursor_after=None)
    for k in redis_client.scan_iter(match=f"{ledger.namespace}:*"):
        redis_client.delete(k)
    assert ledger.is_empty() and ledger.is_empty(["ar_invoices"])
    _, ghost, _ = invoice_batch(sample_invoices(1, prefix="ghost_"))
    ledger.remember("ar_invoices", ghost.tables["ar_invoices"])  # a key Postgres does not have

    assert ledger.rebuild_from_postgres(conn, ["ar_invoices", "ar_invoice_lines"]) == {
        "ar_invoices": 30,
        "ar_invoice_lines": 60,
    }
    assert not ledger.is_empty() and not ledger.is_empty(["ar_invoices", "ar_invoice_lines"])
    assert ledger.is_empty(["customers"])
    assert ledger.split_unchanged("ar_invoices", mapped.tables["ar_invoices"])[1] == 30
    assert ledger.split_unchanged("ar_invoice_lines", mapped.tables["ar_invoice_lines"])[1] == 60
    assert ledger.split_unchanged("ar_invoices", ghost.tables["ar_invoices"])[1] == 0


# -- batch ids -------------------------------------------------------------------------------------


def test_batch_ids_increase_and_never_reuse_a_committed_id(conn, redis_client, redis_namespace):
    ids = [next_batch_id(redis_client, redis_namespace, conn) for _ in range(3)]
    assert ids == [1, 2, 3]
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO erp_sync.sync_batches (batch_id, run_id, source_system, stream, input_sha256,"
            " extracted, loaded_new, loaded_changed, skipped_unchanged, rejected)"
            " VALUES (500, 'r', 'stripe', 'invoices', repeat('0', 64), 0, 0, 0, 0, 0)"
        )
    conn.commit()
    redis_client.delete(counter_key(redis_namespace))  # Redis flushed
    assert next_batch_id(redis_client, redis_namespace, conn) == 501
    redis_client.set(counter_key(redis_namespace), 7)  # Redis restored from an old snapshot
    # raised back above the committed 500 (501 was handed out but never committed: a retry of its
    # holder would hit the primary key, never overwrite a batch)
    assert next_batch_id(redis_client, redis_namespace, conn) == 501
    assert next_batch_id(redis_client, redis_namespace, conn) == 502


def test_batch_ids_are_unique_under_concurrency(migrated_pg_dsn, redis_client, redis_namespace):
    got: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        conn = psycopg2.connect(migrated_pg_dsn)
        try:
            mine = [next_batch_id(redis_client, redis_namespace, conn) for _ in range(50)]
        finally:
            conn.close()
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 201))


# -- the stream lock -------------------------------------------------------------------------------


def _waiting_for(conn, key: int) -> bool:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND ((classid::bigint << 32) | objid::bigint) = %s",
            (key,),
        )
        waiting = cur.fetchone()[0] > 0
    conn.rollback()
    return waiting


def test_second_run_fails_clearly_when_the_lock_is_held(migrated_pg_dsn):
    holder, other = psycopg2.connect(migrated_pg_dsn), psycopg2.connect(migrated_pg_dsn)
    with stream_lock(holder, "stripe", "invoices", timeout_s=5):
        with (
            pytest.raises(
                StreamLockedError, match=r"stripe/invoices is being loaded by another run .*pid \d+"
            ),
            stream_lock(other, "stripe", "invoices", timeout_s=0.2),
        ):
            pytest.fail("acquired a held lock")
        with stream_lock(other, "stripe", "customers", timeout_s=0.2):  # other streams are free
            pass
    with stream_lock(other, "stripe", "invoices", timeout_s=0.2):  # released on exit
        pass
    holder.close()
    other.close()


def test_a_waiting_run_gets_the_lock_when_the_holder_finishes(migrated_pg_dsn):
    holder, waiter, observer = (psycopg2.connect(migrated_pg_dsn) for _ in range(3))
    key = stream_lock_key("stripe", "invoices")
    order: list[str] = []

    def second_run() -> None:
        with stream_lock(waiter, "stripe", "invoices", timeout_s=120):
            order.append("waiter acquired")

    with stream_lock(holder, "stripe", "invoices", timeout_s=5):
        thread = threading.Thread(target=second_run)
        thread.start()
        for _ in range(2000):  # until the waiter is queued on the lock
            if _waiting_for(observer, key):
                break
            thread.join(0.01)
        assert _waiting_for(observer, key)
        order.append("holder releasing")
    thread.join()
    assert order == ["holder releasing", "waiter acquired"]
    for c in (holder, waiter, observer):
        c.close()


def test_a_killed_holder_releases_the_lock(migrated_pg_dsn):
    code = (
        "import sys, time; sys.path.insert(0, 'include'); import psycopg2;"
        "from erp_sync.store.locks import stream_lock;"
        f"c = psycopg2.connect({migrated_pg_dsn!r});"
        "cm = stream_lock(c, 'stripe', 'invoices', timeout_s=5); cm.__enter__();"
        "print('locked', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        conn = psycopg2.connect(migrated_pg_dsn)
        with pytest.raises(StreamLockedError), stream_lock(conn, "stripe", "invoices", timeout_s=0.2):
            pass
        proc.kill()
        proc.wait(timeout=60)
        with stream_lock(conn, "stripe", "invoices", timeout_s=60):
            pass
        conn.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ledger_works_with_a_decoding_client(redis_namespace):
    import redis
    from store_factories import REDIS_URL

    from erp_sync.store.ledger import RedisLedger

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    ledger = RedisLedger(client, namespace=redis_namespace)
    _, mapped, _ = invoice_batch(sample_invoices(3))
    ledger.remember("ar_invoices", mapped.tables["ar_invoices"])
    assert ledger.split_unchanged("ar_invoices", mapped.tables["ar_invoices"])[1] == 3
    client.close()
