"""load_batch against real Postgres and Redis: counts, exact rows, idempotence, the version guard."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import replace
from decimal import Decimal

import psycopg2
import pytest
from store_factories import (
    WINDOW,
    Invoice,
    Line,
    bad_record,
    expected_invoices,
    expected_lines,
    invoice_batch,
    row_versions,
    sample_invoices,
    staging_invoices,
    staging_lines,
)

from erp_sync.core.batch import ConservationError, MappedBatch
from erp_sync.core.hashing import tombstone_sha256
from erp_sync.store.counters import next_batch_id
from erp_sync.store.loader import PlannedBatch, load_batch
from erp_sync.store.locks import StreamLockedError, stream_lock
from erp_sync.store.state import get_cursor

pytestmark = pytest.mark.integration


def _load(conn, ledger, batch, *, cursor_after=None, dry_run=False, **kw):
    key, mapped, pages = batch
    batch_id = next_batch_id(ledger.redis, ledger.namespace, conn)
    return load_batch(
        conn, ledger, key, mapped, pages, batch_id=batch_id, cursor_after=cursor_after, dry_run=dry_run, **kw
    )


def _count(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        value = cur.fetchone()[0]
    conn.rollback()
    return value


def test_first_load_writes_exact_rows_and_counts(conn, ledger):
    invoices = sample_invoices(30)
    result = _load(conn, ledger, invoice_batch(invoices, rejections=[bad_record("in_bad")]))

    assert (
        result.extracted,
        result.loaded_new,
        result.loaded_changed,
        result.skipped_unchanged,
        result.rejected,
    ) == (31, 30, 0, 0, 1)
    assert result.rows_by_table == {"ar_invoices": 30, "ar_invoice_lines": 60}
    assert staging_invoices(conn) == expected_invoices(invoices)
    assert staging_lines(conn) == expected_lines(invoices)
    # Decimals are exact per currency exponent (JPY 0, USD 2, KWD 3), the CSV round trip included quotes
    # commas and newlines in descriptions.
    totals = {sid: row[2] for sid, row in staging_invoices(conn).items()}
    assert totals["in_00000"] == Decimal("30.75") and totals["in_00001"] == Decimal("4500")
    assert totals["in_00002"] == Decimal("9.375")
    assert (
        _count(
            conn,
            "SELECT count(*) FROM erp_staging.ar_invoice_lines WHERE description LIKE "
            "'Usage \"%\", metered' || chr(10) || 'line'",
        )
        == 30
    )
    assert (
        _count(
            conn,
            "SELECT count(*) FROM erp_staging.ar_invoices WHERE interface_status = 'PENDING' "
            f"AND sync_batch_id = {result.batch_id}",
        )
        == 30
    )
    assert _count(conn, "SELECT count(*) FROM erp_sync.sync_batches WHERE extracted = 31") == 1
    assert (
        _count(
            conn,
            "SELECT count(*) FROM erp_sync.rejections WHERE source_id = 'in_bad' "
            "AND reason_code = 'INVALID_FIELD' AND status = 'PENDING'",
        )
        == 1
    )


def test_outbox_keeps_the_exact_raw_page(conn, ledger):
    key, mapped, pages = invoice_batch(sample_invoices(3))
    result = _load(conn, ledger, (key, mapped, pages), page_meta={"mode": "full", "default_version": 7})
    with conn.cursor() as cur:
        cur.execute(
            "SELECT content_gzip, sha256, url, page_meta, record_count, batch_id FROM erp_sync.outbox"
        )
        rows = cur.fetchall()
    assert len(rows) == 1
    content, sha, url, meta, count, batch_id = rows[0]
    assert gzip.decompress(bytes(content)) == pages[0].body
    assert sha == hashlib.sha256(pages[0].body).hexdigest()
    assert (url, meta, count, batch_id) == (
        pages[0].url,
        {"mode": "full", "default_version": 7},
        3,
        result.batch_id,
    )


def test_replayed_batch_returns_recorded_result_and_writes_nothing(conn, ledger):
    batch = invoice_batch(sample_invoices(10))
    first = _load(conn, ledger, batch)
    before = row_versions(conn)
    results = [_load(conn, ledger, batch) for _ in range(3)]
    assert all(r.already_committed and r.batch_id == first.batch_id for r in results)
    assert (results[0].loaded_new, results[0].extracted) == (10, 10)
    assert row_versions(conn) == before
    assert _count(conn, "SELECT count(*) FROM erp_sync.sync_batches") == 1
    assert _count(conn, "SELECT count(*) FROM erp_sync.outbox") == 1


def test_same_rows_in_a_new_batch_are_skipped_without_rewrite(conn, ledger):
    invoices = sample_invoices(10)
    _load(conn, ledger, invoice_batch(invoices, tag="a"))
    before, lines_before = row_versions(conn), row_versions(conn, "ar_invoice_lines")
    for tag in ("b", "c", "d"):  # the same window extracted three more times (pages differ)
        result = _load(conn, ledger, invoice_batch(invoices, tag=tag))
        assert not result.already_committed
        assert (result.loaded_new, result.loaded_changed, result.skipped_unchanged) == (0, 0, 10)
        assert result.rows_by_table == {"ar_invoices": 0, "ar_invoice_lines": 0}
    assert row_versions(conn) == before
    assert row_versions(conn, "ar_invoice_lines") == lines_before
    assert _count(conn, "SELECT count(*) FROM erp_sync.sync_batches") == 4


def test_identical_rows_unknown_to_the_ledger_are_not_rewritten(conn, ledger):
    invoices = sample_invoices(6)
    _load(conn, ledger, invoice_batch(invoices, tag="a"))
    before = row_versions(conn)
    _key, mapped, _ = invoice_batch(invoices)
    for table, df in mapped.tables.items():  # entries lost, marker kept: Postgres must decide
        ledger.evict_frame(table, df)
    result = _load(conn, ledger, invoice_batch(invoices, tag="b"))
    assert (result.loaded_new, result.loaded_changed, result.skipped_unchanged) == (0, 0, 6)
    assert row_versions(conn) == before
    # and the ledger learned them again from what Postgres holds
    assert ledger.split_unchanged("ar_invoices", mapped.tables["ar_invoices"])[1] == 6


def test_flushed_ledger_is_rebuilt_and_stays_correct(conn, ledger, redis_client):
    invoices = sample_invoices(12)
    _load(conn, ledger, invoice_batch(invoices, tag="a"))
    before = row_versions(conn)
    for k in redis_client.scan_iter(match=f"{ledger.namespace}:*"):  # Redis lost (only our namespace)
        redis_client.delete(k)
    assert ledger.is_empty() and ledger.is_empty(["ar_invoices"])

    changed = [
        inv.bump(200, total=Decimal("99.99"), status="paid") if i < 3 else inv
        for i, inv in enumerate(invoices)
    ]
    result = _load(conn, ledger, invoice_batch(changed, tag="b"))
    assert not ledger.is_empty(["ar_invoices", "ar_invoice_lines"])
    assert (result.loaded_new, result.loaded_changed, result.skipped_unchanged) == (0, 3, 9)
    assert staging_invoices(conn) == expected_invoices(changed)
    after = row_versions(conn)
    assert {sid for sid in before if before[sid] != after[sid]} == {"in_00000", "in_00001", "in_00002"}
    # the batch counter was re-seeded above Postgres' ids
    assert result.batch_id > max(v[2] for v in before.values())


def test_version_guard_older_never_overwrites_newer(conn, ledger):
    inv = Invoice("in_x", 300, Decimal("50.00"), status="paid")
    _load(conn, ledger, invoice_batch([inv], tag="new"))
    before = row_versions(conn)
    older = inv.bump(200, total=Decimal("40.00"), status="open")
    result = _load(conn, ledger, invoice_batch([older], tag="old"))
    assert (result.loaded_new, result.loaded_changed, result.skipped_unchanged) == (0, 0, 1)
    assert staging_invoices(conn) == expected_invoices([inv])
    assert row_versions(conn) == before
    # the ledger was not taught the refused content
    _, mapped, _ = invoice_batch([older])
    assert ledger.split_unchanged("ar_invoices", mapped.tables["ar_invoices"])[1] == 0


def test_out_of_order_events_end_at_the_newest_version(conn, ledger):
    v1 = Invoice("in_o", 100, Decimal("10.00"), status="draft", lines=(Line(Decimal("10.00")),))
    v2 = v1.bump(200, status="open")
    v3 = v1.bump(300, status="paid", lines=(Line(Decimal("10.00"), description="Seat (paid)"),))
    results = [_load(conn, ledger, invoice_batch([v], tag=str(v.version))) for v in (v3, v1, v2)]
    assert [(r.loaded_new, r.loaded_changed, r.skipped_unchanged) for r in results] == [
        (1, 0, 0),
        (0, 0, 1),
        (0, 0, 1),
    ]
    assert staging_invoices(conn) == expected_invoices([v3])
    assert staging_lines(conn) == expected_lines([v3])


def test_content_reverting_at_a_newer_version_is_applied(conn, ledger):
    a = Invoice("in_r", 100, Decimal("10.00"), status="open")
    b = a.bump(200, status="void")
    c = a.bump(300)  # same content as a, newer
    for v in (a, b, c):
        _load(conn, ledger, invoice_batch([v], tag=str(v.version)))
    assert staging_invoices(conn) == expected_invoices([c])


def test_a_changed_line_counts_its_invoice_as_changed(conn, ledger):
    inv = Invoice("in_l", 100, Decimal("10.00"), lines=(Line(Decimal("10.00")),))
    _load(conn, ledger, invoice_batch([inv], tag="a", children_digest=False))
    edited = inv.bump(101, lines=(Line(Decimal("10.00"), description="Renamed"),))
    result = _load(conn, ledger, invoice_batch([edited], tag="b", children_digest=False))
    assert (result.loaded_new, result.loaded_changed, result.skipped_unchanged) == (0, 1, 0)
    # a header whose hash covers only its own fields, unchanged: not rewritten; only the line is
    assert result.rows_by_table == {"ar_invoices": 0, "ar_invoice_lines": 1}
    assert staging_lines(conn) == expected_lines([edited])


def test_superseded_copies_count_as_unchanged(conn, ledger):
    newest = Invoice("in_s", 300, Decimal("3.00"))
    older = [newest.bump(100, total=Decimal("1.00")), newest.bump(200, total=Decimal("2.00"))]
    result = _load(conn, ledger, invoice_batch([newest], superseded=older))
    assert (result.extracted, result.loaded_new, result.skipped_unchanged) == (3, 1, 2)
    result.check_conservation()


def test_cursor_moves_only_with_the_batch_that_completes_the_window(conn, ledger):
    _load(conn, ledger, invoice_batch(sample_invoices(3), tag="first"))
    assert get_cursor(conn, "stripe", "invoices") is None
    _load(conn, ledger, invoice_batch(sample_invoices(3, prefix="x"), tag="last"), cursor_after=WINDOW[1])
    assert get_cursor(conn, "stripe", "invoices") == WINDOW[1]
    # an older window (backfill) never moves the cursor backwards
    _load(conn, ledger, invoice_batch(sample_invoices(2, prefix="y"), tag="old"), cursor_after=WINDOW[0])
    assert get_cursor(conn, "stripe", "invoices") == WINDOW[1]


def test_conservation_mismatch_rolls_everything_back(conn, ledger, redis_client):
    key, mapped, pages = invoice_batch(sample_invoices(4))
    broken = MappedBatch(
        mapped.source_system,
        mapped.stream,
        mapped.primary_table,
        mapped.tables,
        mapped.rejections,
        extracted=5,
        superseded=0,
    )  # one record lost upstream
    with pytest.raises(ConservationError):
        load_batch(conn, ledger, key, broken, pages, batch_id=1, cursor_after=WINDOW[1])
    for table in (
        "erp_staging.ar_invoices",
        "erp_staging.ar_invoice_lines",
        "erp_sync.sync_batches",
        "erp_sync.outbox",
        "erp_sync.stream_state",
    ):
        assert _count(conn, f"SELECT count(*) FROM {table}") == 0
    assert ledger.split_unchanged("ar_invoices", mapped.tables["ar_invoices"])[1] == 0


def test_dry_run_reports_the_same_counts_and_writes_nothing(conn, ledger, redis_client):
    invoices = sample_invoices(8)
    _load(conn, ledger, invoice_batch(invoices[:5], tag="a"))
    before = row_versions(conn)
    keys_before = sorted(redis_client.scan_iter(match=f"{ledger.namespace}:*"))
    counts_before = [
        _count(conn, f"SELECT count(*) FROM {t}")
        for t in ("erp_sync.sync_batches", "erp_sync.outbox", "erp_sync.rejections")
    ]

    changed = [invoices[0].bump(200, status="paid"), *invoices[1:]]
    batch = invoice_batch(changed, rejections=[bad_record("in_bad")], tag="b")
    plan = _load(conn, ledger, batch, dry_run=True, cursor_after=WINDOW[1])
    assert isinstance(plan, PlannedBatch)
    assert (plan.loaded_new, plan.loaded_changed, plan.skipped_unchanged, plan.rejected) == (3, 1, 4, 1)
    assert [s["source_id"] for s in plan.samples["update"]] == ["in_00000"]
    assert len(plan.samples["insert"]) == 3 and len(plan.samples["skip"]) == 4
    assert plan.samples["reject"][0]["reason_code"] == "INVALID_FIELD"

    assert row_versions(conn) == before
    assert sorted(redis_client.scan_iter(match=f"{ledger.namespace}:*")) == keys_before
    assert [
        _count(conn, f"SELECT count(*) FROM {t}")
        for t in ("erp_sync.sync_batches", "erp_sync.outbox", "erp_sync.rejections")
    ] == counts_before
    assert get_cursor(conn, "stripe", "invoices") is None

    real = _load(conn, ledger, batch, cursor_after=WINDOW[1])
    assert (real.loaded_new, real.loaded_changed, real.skipped_unchanged, real.rejected) == (3, 1, 4, 1)


def test_batch_id_already_used_is_refused(conn, ledger):
    key, mapped, pages = invoice_batch(sample_invoices(2), tag="a")
    load_batch(conn, ledger, key, mapped, pages, batch_id=7, cursor_after=None)
    key2, mapped2, pages2 = invoice_batch(sample_invoices(2, prefix="z"), tag="b")
    with pytest.raises(Exception, match="sync_batches_pkey"):
        load_batch(conn, ledger, key2, mapped2, pages2, batch_id=7, cursor_after=None)
    assert _count(conn, "SELECT count(*) FROM erp_staging.ar_invoices WHERE source_id LIKE 'z%'") == 0


def _line_status(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT source_id, interface_status, amount FROM erp_staging.ar_invoice_lines ORDER BY 1")
        rows = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
    conn.rollback()
    return rows


def test_a_line_removed_by_a_newer_version_is_soft_deleted_and_can_return(conn, ledger):
    lines = tuple(Line(Decimal(a), line_id=f"il_{a}") for a in ("1.00", "2.00", "3.00"))
    v1 = Invoice("in_d", 100, Decimal("6.00"), lines=lines)
    v2 = v1.bump(200, total=Decimal("4.00"), lines=(lines[0], lines[2]))
    v3 = v1.bump(300, total=Decimal("6.00"))

    _load(conn, ledger, invoice_batch([v1], tag="v1"))
    result = _load(conn, ledger, invoice_batch([v2], tag="v2"))
    # written: the header, line 3 (renumbered 3 -> 2) and line 2 (retired)
    assert (result.loaded_changed, result.rows_by_table) == (1, {"ar_invoices": 1, "ar_invoice_lines": 2})
    assert _line_status(conn) == {
        "in_d:il_1.00": ("PENDING", Decimal("1.000")),
        "in_d:il_2.00": ("DELETED", Decimal("2.000")),
        "in_d:il_3.00": ("PENDING", Decimal("3.000")),
    }
    # the old version arriving late retires nothing and revives nothing
    late = _load(conn, ledger, invoice_batch([v1], tag="v1-late"))
    assert (late.loaded_changed, late.skipped_unchanged) == (0, 1)
    assert _line_status(conn)["in_d:il_2.00"][0] == "DELETED"
    # a newer version with the line back re-activates it, even though its content is identical
    back = _load(conn, ledger, invoice_batch([v3], tag="v3"))
    assert back.loaded_changed == 1
    assert {sid: st for sid, (st, _) in _line_status(conn).items()} == dict.fromkeys(
        ["in_d:il_1.00", "in_d:il_2.00", "in_d:il_3.00"], "PENDING"
    )


def test_a_tombstone_first_seen_in_a_load_is_staged_deleted_by_copy_and_by_upsert(conn, ledger):
    """ADR 0015: a deleted record the ledger has never seen goes in with the cold load's COPY,
    staged DELETED; one that staging already holds live is turned DELETED by the upsert, its lines
    retired; the same tombstone again writes nothing."""
    lines = (Line(Decimal("1.00"), line_id="il_a"), Line(Decimal("2.00"), line_id="il_b"))
    fresh, live, other = (
        Invoice(sid, 100, Decimal("3.00"), lines=lines) for sid in ("in_t1", "in_t2", "in_t3")
    )
    cold = _tombstones(invoice_batch([fresh, other], tag="cold"), {"in_t1"})
    assert _load(conn, ledger, cold).loaded_new == 2
    _load(conn, ledger, invoice_batch([live], tag="live"))
    gone = _tombstones(invoice_batch([live.bump(200)], tag="gone"), {"in_t2"})
    assert _load(conn, ledger, gone).loaded_changed == 1
    assert _header_status(conn) == {"in_t1": "DELETED", "in_t2": "DELETED", "in_t3": "PENDING"}
    assert {sid: st for sid, (st, _) in _line_status(conn).items() if sid.startswith("in_t2")} == {
        "in_t2:il_a": "DELETED",
        "in_t2:il_b": "DELETED",
    }
    before = row_versions(conn)
    again = _load(conn, ledger, _tombstones(invoice_batch([live.bump(200)], tag="again"), {"in_t2"}))
    assert (again.loaded_changed, again.skipped_unchanged) == (0, 1)
    assert row_versions(conn) == before


def _tombstones(batch, deleted_ids):
    """The batch with `deleted_ids` marked deleted, as the mapping leaves them: a tombstone hash, no
    child rows."""
    key, mapped, pages = batch
    heads = mapped.tables["ar_invoices"].copy()
    gone = heads["source_id"].isin(deleted_ids)
    heads.loc[gone, "row_sha256"] = [tombstone_sha256(sha) for sha in heads.loc[gone, "row_sha256"]]
    lines = mapped.tables["ar_invoice_lines"]
    tables = {"ar_invoices": heads, "ar_invoice_lines": lines[~lines["invoice_source_id"].isin(deleted_ids)]}
    return key, replace(mapped, tables=tables, deleted_ids=frozenset(deleted_ids)), pages


def _header_column(conn, column):
    """source_id -> `column` of every staged invoice header."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT source_id, {column} FROM erp_staging.ar_invoices")
        rows = dict(cur.fetchall())
    conn.rollback()
    return rows


def _header_status(conn):
    return _header_column(conn, "interface_status")


def test_an_empty_last_batch_still_records_itself_and_moves_the_cursor(conn, ledger):
    batch = invoice_batch([], tag="empty")
    result = _load(conn, ledger, batch, cursor_after=WINDOW[1])
    assert (result.extracted, result.loaded_new, result.rows_by_table) == (
        0,
        0,
        {"ar_invoices": 0, "ar_invoice_lines": 0},
    )
    assert get_cursor(conn, "stripe", "invoices") == WINDOW[1]
    assert _load(conn, ledger, batch, cursor_after=WINDOW[1]).already_committed


def test_an_old_version_arriving_late_adds_no_line_the_newer_version_lacks(conn, ledger):
    a, m = Line(Decimal("1.00"), line_id="il_a"), Line(Decimal("2.00"), line_id="il_m")
    v1 = Invoice("in_late", 100, Decimal("3.00"), lines=(a, m))
    v2 = v1.bump(200, total=Decimal("1.00"), lines=(a,))
    _load(conn, ledger, invoice_batch([v2], tag="v2"))
    late = _load(conn, ledger, invoice_batch([v1], tag="v1"))
    assert (late.loaded_new, late.loaded_changed, late.skipped_unchanged) == (0, 0, 1)
    assert late.rows_by_table == {"ar_invoices": 0, "ar_invoice_lines": 0}
    assert staging_invoices(conn) == expected_invoices([v2])
    assert staging_lines(conn) == expected_lines([v2])


def test_load_takes_the_stream_lock_and_passes_through_its_holder(conn, ledger, migrated_pg_dsn):
    other = psycopg2.connect(migrated_pg_dsn)
    key, mapped, pages = invoice_batch(sample_invoices(2))
    with stream_lock(other, "stripe", "invoices", timeout_s=5):
        with pytest.raises(StreamLockedError):
            load_batch(conn, ledger, key, mapped, pages, batch_id=1, cursor_after=None, lock_timeout_s=0.2)
        assert _count(conn, "SELECT count(*) FROM erp_staging.ar_invoices") == 0
    with stream_lock(conn, "stripe", "invoices", timeout_s=5) as lock_key:
        assert load_batch(conn, ledger, key, mapped, pages, batch_id=1, cursor_after=None).loaded_new == 2
        with other.cursor() as cur:  # the caller's hold survived the load's own acquire/release
            cur.execute("SELECT pg_try_advisory_lock(%s)", (lock_key,))
            assert cur.fetchone()[0] is False
        other.rollback()
    other.close()


def _header_block(conn, source_id):
    return _count(
        conn,
        f"SELECT (ctid::text::point)[0]::int FROM erp_staging.ar_invoices WHERE source_id = '{source_id}'",
    )


def test_a_changed_header_is_rewritten_on_its_own_page(conn, ledger):
    # A full first page (fillfactor 100) would send the new version elsewhere, with new index entries.
    invoices = sample_invoices(300)
    _load(conn, ledger, invoice_batch(invoices, tag="a"))
    assert (
        _header_block(conn, "in_00000") == 0
        and _count(conn, "SELECT count(*) FROM erp_staging.ar_invoices WHERE (ctid::text::point)[0] = 0") > 10
    )
    paid = invoices[0].bump(200, status="paid")
    result = _load(conn, ledger, invoice_batch([paid, *invoices[1:]], tag="b"))
    assert result.loaded_changed == 1
    assert _header_block(conn, "in_00000") == 0


# --- the retire looks only under headers whose lines changed (ADR 0027) -------------------------


class _RecordingCursor(psycopg2.extensions.cursor):
    """Notes the parent ids of every retire of removed lines the loader sends, then sends it."""

    def execute(self, query, vars=None):
        if isinstance(query, str) and "WITH parents AS" in query:
            self.connection.retire_parents.append(sorted(vars["ids"]))
        return super().execute(query, vars)


class _RecordingConnection(psycopg2.extensions.connection):
    retire_parents: list[list[str]]


@pytest.fixture
def recording_conn(migrated_pg_dsn):
    connection = psycopg2.connect(
        migrated_pg_dsn, connection_factory=_RecordingConnection, cursor_factory=_RecordingCursor
    )
    connection.retire_parents = []
    yield connection
    connection.close()


def _children_digests(conn):
    return _header_column(conn, "children_sha256")


def test_lines_are_looked_for_only_under_headers_whose_lines_changed_and_tombstones(recording_conn, ledger):
    conn = recording_conn
    two = (Line(Decimal("1.00"), line_id="il_a"), Line(Decimal("2.00"), line_id="il_b"))
    paid, cut, gone, same = (
        Invoice(sid, 100, Decimal("3.00"), lines=two) for sid in ("in_paid", "in_cut", "in_gone", "in_same")
    )
    first = _load(conn, ledger, invoice_batch([paid, cut, gone, same], tag="v1"))
    assert (first.loaded_new, conn.retire_parents) == (4, [])  # a cold load retires nothing
    before = _children_digests(conn)

    newer = [
        paid.bump(200, status="paid"),  # rewritten, same lines
        cut.bump(200, total=Decimal("1.00"), lines=two[:1]),  # rewritten, one line fewer
        gone.bump(200),  # deleted in the SaaS
        same,  # unchanged
        Invoice("in_new", 200, Decimal("1.00"), lines=two[:1]),
    ]
    result = _load(conn, ledger, _tombstones(invoice_batch(newer, tag="v2"), {"in_gone"}))

    assert (result.loaded_new, result.loaded_changed, result.skipped_unchanged) == (1, 3, 1)
    assert conn.retire_parents == [["in_cut", "in_gone"]]
    assert {sid: st for sid, (st, _) in _line_status(conn).items()} == {
        "in_paid:il_a": "PENDING",
        "in_paid:il_b": "PENDING",
        "in_cut:il_a": "PENDING",
        "in_cut:il_b": "DELETED",
        "in_gone:il_a": "DELETED",
        "in_gone:il_b": "DELETED",
        "in_same:il_a": "PENDING",
        "in_same:il_b": "PENDING",
        "in_new:il_a": "PENDING",
    }
    after = _children_digests(conn)
    assert (after["in_cut"] != before["in_cut"], after["in_paid"] == before["in_paid"]) == (True, True)


def test_a_header_staged_without_a_digest_is_looked_under_when_next_rewritten(recording_conn, ledger):
    """Headers staged before V061 (or by a mapping without the digest) hold NULL: their next rewrite
    looks for removed lines as before, and from then on the header has its digest."""
    conn = recording_conn
    two = (Line(Decimal("1.00"), line_id="il_a"), Line(Decimal("2.00"), line_id="il_b"))
    old = Invoice("in_old", 100, Decimal("3.00"), lines=two)
    _load(conn, ledger, invoice_batch([old], tag="v1", children_digest=False))
    assert _children_digests(conn) == {"in_old": None}

    _load(conn, ledger, invoice_batch([old.bump(200, status="paid")], tag="v2"))
    _load(conn, ledger, invoice_batch([old.bump(300, status="void")], tag="v3"))

    assert conn.retire_parents == [["in_old"]]  # v2 looked (NULL before it); v3 did not
    assert _children_digests(conn)["in_old"] is not None


def test_without_the_digest_column_every_rewritten_header_is_looked_under(recording_conn, ledger):
    conn = recording_conn
    two = (Line(Decimal("1.00"), line_id="il_a"), Line(Decimal("2.00"), line_id="il_b"))
    a, b = (Invoice(sid, 100, Decimal("3.00"), lines=two) for sid in ("in_a", "in_b"))
    _load(conn, ledger, invoice_batch([a, b], tag="v1", children_digest=False))
    _load(
        conn,
        ledger,
        invoice_batch(
            [a.bump(200, status="paid"), b.bump(200, lines=two[:1])], tag="v2", children_digest=False
        ),
    )
    assert conn.retire_parents == [["in_a", "in_b"]]
    assert _line_status(conn)["in_b:il_b"][0] == "DELETED"


def test_a_record_the_repair_resends_is_looked_under_even_with_the_same_lines(recording_conn, ledger):
    """Staging changed outside the sync (here a retired line made live again by hand): the repair
    clears the header's hash and its children's digest, so re-sending the same record retires the
    line again."""
    from erp_sync.reconcile_run import _invalidate_rows

    conn = recording_conn
    lines = (Line(Decimal("1.00"), line_id="il_a"), Line(Decimal("2.00"), line_id="il_b"))
    v1 = Invoice("in_r", 100, Decimal("3.00"), lines=lines)
    v2 = v1.bump(200, total=Decimal("1.00"), lines=lines[:1])
    _load(conn, ledger, invoice_batch([v1], tag="v1"))
    _load(conn, ledger, invoice_batch([v2], tag="v2"))
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE erp_staging.ar_invoice_lines SET interface_status = 'PENDING' WHERE source_id = 'in_r:il_b'"
        )
    conn.commit()
    conn.retire_parents.clear()

    _invalidate_rows(conn, "ar_invoices", "stripe", ["in_r"], children_digest=True)
    ledger.evict("ar_invoices", ["in_r"], source_system="stripe")
    _load(conn, ledger, invoice_batch([v2.bump(300)], tag="resent"))  # versioned with the repair's start

    assert conn.retire_parents == [["in_r"]]
    assert _line_status(conn)["in_r:il_b"][0] == "DELETED"
