"""A repair's tombstones survive a restore from the backups (ADR 0022), against real Postgres, Redis, an
OpenSSH SFTP server and the sandbox. Drafts are deleted in the sandbox while only full refreshes run
(which cannot see a deletion), the repair tombstones them (ADR 0020), and the drain backs up its batch's
document with the pages. A restore into an empty database, or into emptied staging, stages them
`DELETED` again with their lines retired and their evidence; a restore into the database that holds
them writes nothing; a tampered or rewritten document stops the restore before any write."""

from __future__ import annotations

import gzip
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import psycopg2
import pytest

from erp_sync.backup import RestoreIntegrityError, drain_outbox
from erp_sync.backup.layout import manifest_path
from erp_sync.backup.manifest import dumps
from erp_sync.backup.remote import read_back
from erp_sync.backup.restore import restore
from erp_sync.clients.auth import BearerSecretKey
from erp_sync.clients.client import SaaSClient
from erp_sync.clients.sources import SourceClients
from erp_sync.core.tombstone_document import TOMBSTONE_MODE
from erp_sync.pipeline import WindowRequest, sync_stream
from erp_sync.reconcile_run import parse_request, run_request
from erp_sync.sandbox.testing import SandboxHandle, running_sandbox
from erp_sync.store.ledger import RedisLedger
from erp_sync.store.migrations import apply_migrations
from erp_sync.streams import STREAMS
from tests.conftest import create_database, drop_database

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STAGING = ("ar_invoices", "ar_invoice_lines")
REPAIR_RUN = "reconcile__repair"
EVERYTHING = {"date_from": "2000-01-01", "date_to": "2100-01-01"}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(invoices=40, seed=8) as handle:
        yield handle


def _client(sandbox: SandboxHandle) -> SaaSClient:
    return SaaSClient(sandbox.base_url, BearerSecretKey(sandbox.secret_key), page_size=20)


def _full_refresh(sandbox: SandboxHandle, conn: Any, redis_client: Any, ns: str, run_id: str) -> None:
    sync_stream(
        spec=STREAMS["invoices"], client=_client(sandbox), conn=conn, redis_client=redis_client,
        run_id=run_id, namespace=ns, batch_records=25,
        window=WindowRequest(full_refresh=True, window_end=datetime.now(UTC) + timedelta(days=1)),
    )  # fmt: skip


def _rows(conn: Any, sql: str, args: Any = ()) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        rows = cur.fetchall() if cur.description else []
    conn.commit()
    return rows


def _staging(conn: Any, *, with_load_columns: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    """Every staging row of the invoices, sorted; by default without the columns a reload changes."""
    snapshot = {}
    with conn.cursor() as cur:
        for table in STAGING:
            cur.execute(f"SELECT *, xmin::text AS row_xmin FROM erp_staging.{table}")
            names = [d[0] for d in cur.description]
            drop = set() if with_load_columns else {"sync_batch_id", "loaded_at", "row_xmin"}
            keep = [i for i, n in enumerate(names) if n not in drop]
            snapshot[table] = sorted(tuple(row[i] for i in keep) for row in cur.fetchall())
    conn.commit()
    return snapshot


def _tombstones(conn: Any, ids: list[str]) -> dict[str, tuple[Any, ...]]:
    """source_id -> (interface_status, row_sha256, source_version) of the headers and their lines."""
    return {
        str(r[0]): tuple(r[1:])
        for r in _rows(
            conn,
            "SELECT source_id, interface_status, row_sha256, source_version FROM erp_staging.ar_invoices"
            " WHERE source_id = ANY(%(ids)s) UNION ALL SELECT source_id, interface_status, row_sha256,"
            " source_version FROM erp_staging.ar_invoice_lines WHERE invoice_source_id = ANY(%(ids)s)",
            {"ids": ids},
        )
    }


def _evidence(conn: Any) -> list[tuple[Any, ...]]:
    """Every evidence row, without the batch that wrote it."""
    return _rows(
        conn,
        "SELECT source_id, report_id, evidence, api_message, looked_up_at, outcome FROM erp_sync.repair_tombstones"
        " ORDER BY batch_id, source_id",
    )


def _control_counts(conn: Any) -> tuple[int, int, int]:
    """(sync_batches, repair_tombstones, outbox) rows."""
    return _rows(
        conn,
        "SELECT (SELECT count(*) FROM erp_sync.sync_batches), (SELECT count(*) FROM erp_sync.repair_tombstones),"
        " (SELECT count(*) FROM erp_sync.outbox)",
    )[0]


def _ledger_entries(ledger: RedisLedger, table: str, ids: list[str]) -> list[str | None]:
    return ledger.lookup(table, pd.DataFrame({"source_system": ["stripe"] * len(ids), "source_id": ids}))


def _document_entry(sftp: Any) -> dict[str, Any]:
    [entry] = [
        f
        for f in json.loads(read_back(sftp, manifest_path(REPAIR_RUN))[0])["files"]
        if f["page_meta"].get("mode") == TOMBSTONE_MODE
    ]
    return entry


@pytest.fixture
def repaired(
    sandbox: SandboxHandle, sftp: Any, db: Any, redis_client: Any, redis_namespace: str
) -> dict[str, Any]:
    """Drafts deleted while only full refreshes ran, tombstoned by a repair, everything backed up."""
    ns = redis_namespace
    sandbox.admin.mutate(5, kinds=["new_draft_invoice"])
    time.sleep(1.1)
    _full_refresh(sandbox, db, redis_client, ns, "scheduled__night1")
    changes = sandbox.admin.mutate(2, kinds=["delete_draft_invoice"])["applied"]
    deleted = sorted(c["id"] for c in changes if c["kind"] == "delete_draft_invoice")
    assert len(deleted) == 2, changes
    time.sleep(1.1)
    _full_refresh(sandbox, db, redis_client, ns, "scheduled__night2")
    period = {
        "period_start": "2020-01-01T00:00:00Z", "period_end": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        "streams": ["invoices"], "repair": True,
    }  # fmt: skip
    outcome = run_request(
        conn=db, clients=SourceClients({"stripe": _client(sandbox)}), request=parse_request(period, now=datetime.now(UTC)),
        redis_client=redis_client, namespace=ns, run_id=REPAIR_RUN,
    )  # fmt: skip
    assert outcome.repair.tombstones["invoices"].tombstoned == deleted
    drained = drain_outbox(sftp, db)
    assert drained.runs == ["scheduled__night1", "scheduled__night2", REPAIR_RUN]
    tombstones = _tombstones(db, deleted)
    assert len(tombstones) > len(deleted) and {t[0] for t in tombstones.values()} == {"DELETED"}
    return {
        "deleted": deleted,
        "tombstones": tombstones,
        "staging": _staging(db),
        "evidence": _evidence(db),
        "ledger": RedisLedger(redis_client, namespace=ns),
    }


@pytest.fixture
def empty_database(redis_client: Any) -> Iterator[tuple[Any, RedisLedger]]:
    """Another migrated database, empty, with its own ledger: where a disaster recovery restores to."""
    dsn = create_database()
    conn = psycopg2.connect(dsn)
    apply_migrations(conn)
    namespace = f"erpsync-test-{uuid.uuid4().hex[:10]}"
    yield conn, RedisLedger(redis_client, namespace=namespace)
    conn.close()
    drop_database(dsn)
    for key in redis_client.scan_iter(match=f"{namespace}:*", count=1000):
        redis_client.delete(key)


def test_a_restore_into_an_empty_database_stages_the_repairs_tombstones_again(
    repaired: dict[str, Any], sftp: Any, empty_database: tuple[Any, RedisLedger]
) -> None:
    conn, ledger = empty_database
    deleted = repaired["deleted"]

    result = restore(sftp, conn, ledger, **EVERYTHING, restore_run_id="restore__dr")

    # The whole of staging as it was, the tombstones and their retired lines with the same hashes and
    # version; no drift report is in this database, the evidence names the one that found them.
    assert _tombstones(conn, deleted) == repaired["tombstones"]
    assert _staging(conn) == repaired["staging"]
    assert result.runs == ["scheduled__night1", "scheduled__night2", REPAIR_RUN]
    assert result.tombstoned == len(deleted)
    assert _evidence(conn) == repaired["evidence"]
    assert _rows(conn, "SELECT count(*) FROM erp_sync.drift_reports") == [(0,)]
    [(run_id, window_start, changed, rows_by_table)] = _rows(
        conn,
        "SELECT b.run_id, b.window_start, b.loaded_changed, b.rows_by_table FROM erp_sync.sync_batches b"
        " WHERE b.batch_id = (SELECT DISTINCT batch_id FROM erp_sync.repair_tombstones)",
    )
    lines = len(repaired["tombstones"]) - len(deleted)
    assert (run_id, window_start, changed) == ("restore__dr", datetime(2020, 1, 1, tzinfo=UTC), len(deleted))
    assert rows_by_table == {"ar_invoices": len(deleted), "ar_invoice_lines": lines}
    # The ledger holds no entry for what the batch wrote, as after the repair's own batch.
    line_ids = sorted(set(repaired["tombstones"]) - set(deleted))
    assert _ledger_entries(ledger, "ar_invoices", deleted) == [None] * len(deleted)
    assert _ledger_entries(ledger, "ar_invoice_lines", line_ids) == [None] * len(line_ids)
    # Its document, written again, is the verified file: nothing is queued for another upload.
    document = _document_entry(sftp)
    assert _rows(conn, "SELECT remote_path FROM erp_sync.outbox WHERE backed_up_at IS NULL") == []
    assert _rows(
        conn, "SELECT count(*) FROM erp_sync.outbox WHERE remote_path = %s", (document["path"],)
    ) == [(1,)]

    # Restored again into the database it rebuilt: nothing is written.
    staged, controls = _staging(conn, with_load_columns=True), _control_counts(conn)
    again = restore(sftp, conn, ledger, **EVERYTHING, restore_run_id="restore__dr2")
    assert again.rows_written == 0 and again.batches == 0 and again.tombstoned == 0
    assert _staging(conn, with_load_columns=True) == staged and _control_counts(conn) == controls


def test_a_restore_into_emptied_staging_is_not_skipped_for_the_original_batch(
    repaired: dict[str, Any], sftp: Any, db: Any
) -> None:
    """The database keeps the repair's batch record and evidence; only staging is emptied. The original
    batch's key must not make the restore skip the tombstones."""
    with db.cursor() as cur:  # the test's login is a superuser: it may empty staging, the loader may not
        cur.execute("TRUNCATE " + ", ".join(f"erp_staging.{t}" for t in STAGING))
    db.commit()

    result = restore(sftp, db, repaired["ledger"], **EVERYTHING)

    assert _tombstones(db, repaired["deleted"]) == repaired["tombstones"]
    assert _staging(db) == repaired["staging"]
    assert result.tombstoned == len(repaired["deleted"])
    assert _evidence(db) == repaired["evidence"] * 2  # the repair's batch, and the restore's


def test_a_restore_into_the_database_that_holds_the_tombstones_writes_nothing(
    repaired: dict[str, Any], sftp: Any, db: Any
) -> None:
    before, controls = _staging(db, with_load_columns=True), _control_counts(db)
    assert _document_entry(sftp)["record_count"] == len(repaired["deleted"])

    result = restore(sftp, db, repaired["ledger"], **EVERYTHING)

    assert REPAIR_RUN in result.runs and result.batches_already_present > 0
    assert result.rows_written == 0 and result.batches == 0 and result.tombstoned == 0
    assert _staging(db, with_load_columns=True) == before and _control_counts(db) == controls


def _empty_staging_for_a_refused_restore(
    db: Any,
) -> tuple[dict[str, list[tuple[Any, ...]]], tuple[int, int, int]]:
    with db.cursor() as cur:
        cur.execute("TRUNCATE " + ", ".join(f"erp_staging.{t}" for t in STAGING))
    db.commit()
    return _staging(db, with_load_columns=True), _control_counts(db)


def test_a_tampered_tombstone_document_stops_the_restore_before_any_write(
    repaired: dict[str, Any], sftp: Any, db: Any, sftp_server: Any, remote_dir: str
) -> None:
    victim = _document_entry(sftp)["path"]
    on_disk = sftp_server.data_dir / remote_dir / victim
    data = bytearray(on_disk.read_bytes())
    data[len(data) // 2] ^= 0x40  # one byte flipped
    on_disk.write_bytes(bytes(data))
    before, controls = _empty_staging_for_a_refused_restore(db)

    with pytest.raises(RestoreIntegrityError) as refused:
        restore(sftp, db, repaired["ledger"], **EVERYTHING)

    assert victim in str(refused.value) and "nothing written" in str(refused.value)
    assert _staging(db, with_load_columns=True) == before and _control_counts(db) == controls


def test_a_document_rewritten_with_its_manifest_is_refused_before_any_write(
    repaired: dict[str, Any], sftp: Any, db: Any, sftp_server: Any, remote_dir: str
) -> None:
    """Sizes and hashes that match prove the file is the one the manifest lists, not that it holds
    together: a record dropped from the document (and from the manifest) leaves its batch digest
    wrong, and the restore refuses it before it loads the runs before it."""
    manifest_file = sftp_server.data_dir / remote_dir / manifest_path(REPAIR_RUN)
    manifest = json.loads(manifest_file.read_bytes())
    [entry] = [f for f in manifest["files"] if f["page_meta"].get("mode") == TOMBSTONE_MODE]
    content = json.loads(gzip.decompress((sftp_server.data_dir / remote_dir / entry["path"]).read_bytes()))
    content["gone"] = content["gone"][1:]
    raw = json.dumps(content).encode()
    gz = gzip.compress(raw)
    (sftp_server.data_dir / remote_dir / entry["path"]).write_bytes(gz)
    entry.update(
        size=len(gz), sha256_gz=hashlib.sha256(gz).hexdigest(), sha256_raw=hashlib.sha256(raw).hexdigest(),
        raw_size=len(raw), record_count=len(content["gone"]),
    )  # fmt: skip
    manifest_file.write_bytes(dumps(manifest))
    before, controls = _empty_staging_for_a_refused_restore(db)

    with pytest.raises(RestoreIntegrityError, match="does not match its gone ids") as refused:
        restore(sftp, db, repaired["ledger"], **EVERYTHING)

    assert entry["path"] in str(refused.value) and "nothing written" in str(refused.value)
    assert _staging(db, with_load_columns=True) == before and _control_counts(db) == controls
