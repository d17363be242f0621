"""A repair's tombstones survive a restore from the backups (ADR 0022), against real Postgres, Redis, an
OpenSSH SFTP server and the sandbox. Drafts are deleted in the sandbox while only full refreshes run
(which cannot see a deletion), the repair tombstones them (ADR 0020), and the drain backs up its batch's
document with the pages. A restore into an empty database, or into emptied staging, stages them
`DELETED` again with their lines retired and their evidence; a restore into the database that holds
them writes nothing; a tampered or rewritten document stops the restore before any write.

Restored run by run in any order (ADR 0026), the repair's run before the runs that staged its records
included, they end as a restore in order leaves them: the tombstones wait for their records, and the
restore that stages them tombstones them. A record staged newer than its waiting tombstone stays live,
a restore that dies before its last step stages them when retried, and a database that holds
everything writes nothing."""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from backup_helpers import another_database

from erp_sync.backup import RestoreIntegrityError, drain_outbox
from erp_sync.backup.layout import manifest_path
from erp_sync.backup.manifest import dumps
from erp_sync.backup.remote import read_back
from erp_sync.backup.restore import RestoreResult, restore
from erp_sync.clients.auth import BearerSecretKey
from erp_sync.clients.client import SaaSClient
from erp_sync.clients.sources import SourceClients
from erp_sync.core.batch import BatchKey
from erp_sync.core.tombstone_document import TOMBSTONE_MODE
from erp_sync.core.tombstones import Evidence, GoneRecord, tombstone_input_sha256
from erp_sync.pipeline import WindowRequest, sync_stream
from erp_sync.reconcile_run import parse_request, run_request
from erp_sync.sandbox.testing import SandboxHandle, running_sandbox
from erp_sync.store.counters import next_batch_id
from erp_sync.store.ledger import RedisLedger
from erp_sync.store.tombstones import TombstoneRequest, stage_tombstones
from erp_sync.streams import STREAMS

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


# -- restored in any order (ADR 0026) ----------------------------------------------------------------

NIGHT1, NIGHT2 = "scheduled__night1", "scheduled__night2"
# The orders in which the repair's run is restored before night 1, the one run that staged its drafts
# (the other three are restores in order for them).
OUT_OF_ORDER = [(REPAIR_RUN, NIGHT1, NIGHT2), (REPAIR_RUN, NIGHT2, NIGHT1), (NIGHT2, REPAIR_RUN, NIGHT1)]


def _waiting(conn: Any) -> list[str]:
    """The records whose tombstone waits for them."""
    return [
        str(r[0])
        for r in _rows(
            conn, "SELECT source_id FROM erp_sync.deferred_tombstones WHERE outcome IS NULL ORDER BY 1"
        )
    ]


def _resolutions(conn: Any) -> dict[str, str | None]:
    """source_id -> what became of its waiting tombstone (None: it still waits)."""
    return {str(i): o for i, o in _rows(conn, "SELECT source_id, outcome FROM erp_sync.deferred_tombstones")}


def _staging_but_versions(conn: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every staging row of the invoices, sorted, without the columns a reload changes and without
    `source_version`: a run restored before an older one leaves its newer version on rows whose content
    the older one does not change (the page restore's own rule, older than this)."""
    versions_dropped = {}
    with conn.cursor() as cur:
        for table in ("ar_invoices", "ar_invoice_lines"):
            cur.execute(f"SELECT * FROM erp_staging.{table}")
            names = [d[0] for d in cur.description]
            keep = [
                i for i, n in enumerate(names) if n not in ("sync_batch_id", "loaded_at", "source_version")
            ]
            versions_dropped[table] = sorted(tuple(row[i] for i in keep) for row in cur.fetchall())
    conn.commit()
    return versions_dropped


def _all_counts(conn: Any) -> tuple[Any, ...]:
    """Rows of every control table a restore writes, the waiting tombstones' included."""
    [waiting] = _rows(
        conn,
        "SELECT (SELECT count(*) FROM erp_sync.deferred_tombstone_documents),"
        " (SELECT count(*) FROM erp_sync.deferred_tombstones),"
        " (SELECT count(*) FROM erp_sync.deferred_tombstones WHERE outcome IS NOT NULL)",
    )
    return (*_control_counts(conn), *waiting)


def _restore_each(sftp: Any, conn: Any, ledger: RedisLedger, runs: tuple[str, ...]) -> list[RestoreResult]:
    """Each run restored on its own, as an operator restoring run by run would."""
    return [
        restore(sftp, conn, ledger, run_id=run, restore_run_id=f"restore__{i}_{run}")
        for i, run in enumerate(runs)
    ]


@pytest.mark.parametrize("order", OUT_OF_ORDER, ids=["->".join(o) for o in OUT_OF_ORDER])
def test_runs_restored_one_by_one_in_any_order_end_with_the_repairs_tombstones(
    order: tuple[str, ...],
    repaired: dict[str, Any],
    db: Any,
    sftp: Any,
    empty_database: tuple[Any, RedisLedger],
) -> None:
    """`db` is the database the repair ran in."""
    conn, ledger = empty_database
    deleted = repaired["deleted"]

    results = _restore_each(sftp, conn, ledger, order)

    # Tombstoned as the repair tombstoned them (header and lines: status, hash, version), whichever
    # run came first, and everything else as after a restore in order.
    assert _tombstones(conn, deleted) == repaired["tombstones"]
    assert _evidence(conn) == repaired["evidence"]
    if order.index(NIGHT1) < order.index(NIGHT2):
        assert _staging(conn) == repaired["staging"]
    else:
        assert _staging_but_versions(conn) == _staging_but_versions(db)
    # They waited from the restore of the repair's run to the restore of night 1, which staged them.
    repair_at, night1_at = order.index(REPAIR_RUN), order.index(NIGHT1)
    assert [r.tombstones_waiting for r in results] == [
        len(deleted) if repair_at <= i < night1_at else 0 for i in range(len(order))
    ]
    assert [r.tombstoned_after_waiting for r in results] == [
        len(deleted) if i == night1_at else 0 for i in range(len(order))
    ]
    assert sum(r.tombstoned for r in results) == len(deleted)
    assert _resolutions(conn) == dict.fromkeys(deleted, "tombstoned")
    # One batch, of night 1's restore, over the report's period, as the restore in order records it.
    [(run_id, window_start, changed, rows_by_table)] = _rows(
        conn,
        "SELECT b.run_id, b.window_start, b.loaded_changed, b.rows_by_table FROM erp_sync.sync_batches b"
        " WHERE b.batch_id = (SELECT DISTINCT batch_id FROM erp_sync.repair_tombstones)",
    )
    lines = len(repaired["tombstones"]) - len(deleted)
    assert (run_id, window_start, changed) == (
        f"restore__{night1_at}_{NIGHT1}",
        datetime(2020, 1, 1, tzinfo=UTC),
        len(deleted),
    )
    assert rows_by_table == {"ar_invoices": len(deleted), "ar_invoice_lines": lines}
    # No ledger entry for what it wrote; the document written once, as the verified file.
    line_ids = sorted(set(repaired["tombstones"]) - set(deleted))
    assert _ledger_entries(ledger, "ar_invoices", deleted) == [None] * len(deleted)
    assert _ledger_entries(ledger, "ar_invoice_lines", line_ids) == [None] * len(line_ids)
    assert _rows(conn, "SELECT remote_path FROM erp_sync.outbox WHERE backed_up_at IS NULL") == []
    assert _rows(
        conn, "SELECT count(*) FROM erp_sync.outbox WHERE remote_path = %s", (_document_entry(sftp)["path"],)
    ) == [(1,)]

    # Everything restored again, in order, into the database that holds it all: nothing is written.
    staged, counts = _staging(conn, with_load_columns=True), _all_counts(conn)
    again = restore(sftp, conn, ledger, **EVERYTHING, restore_run_id="restore__again")
    assert again.rows_written == 0 and again.batches == 0 and again.tombstoned == 0
    assert again.tombstones_waiting == 0
    assert _staging(conn, with_load_columns=True) == staged and _all_counts(conn) == counts


def test_a_restore_that_dies_before_its_waiting_tombstones_commit_stages_them_when_retried(
    repaired: dict[str, Any],
    sftp: Any,
    empty_database: tuple[Any, RedisLedger],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn, ledger = empty_database
    deleted = repaired["deleted"]
    restore(sftp, conn, ledger, run_id=REPAIR_RUN, restore_run_id="restore__repair")

    def crash(name: str) -> None:
        if name == "before_commit":
            raise SystemExit("killed before COMMIT")

    monkeypatch.setattr("erp_sync.store.tombstones.crash_point", crash)
    with pytest.raises(SystemExit):
        restore(sftp, conn, ledger, run_id=NIGHT1, restore_run_id="restore__night1")
    monkeypatch.undo()

    # Night 1's pages committed, the tombstones did not: the drafts are live, and still wait.
    assert {status for status, _, _ in _tombstones(conn, deleted).values()} == {"PENDING"}
    assert _waiting(conn) == deleted
    assert _rows(conn, "SELECT count(*) FROM erp_sync.repair_tombstones") == [(0,)]

    retried = restore(sftp, conn, ledger, run_id=NIGHT1, restore_run_id="restore__night1")

    assert _tombstones(conn, deleted) == repaired["tombstones"]
    assert _evidence(conn) == repaired["evidence"]
    assert retried.tombstoned_after_waiting == len(deleted)
    assert _waiting(conn) == [] and retried.tombstones_waiting == 0
    assert _ledger_entries(ledger, "ar_invoices", deleted) == [None] * len(deleted)
    staged, counts = _staging(conn, with_load_columns=True), _all_counts(conn)
    assert restore(sftp, conn, ledger, run_id=NIGHT1, restore_run_id="restore__night1").tombstoned == 0
    assert _staging(conn, with_load_columns=True) == staged and _all_counts(conn) == counts


# -- a record that came back, and a document half of whose records are staged when it is restored ----

WRONG_RUN = "reconcile__wrong_answer"
N1, N2, N3, N4 = (f"scheduled__n{i}" for i in range(1, 5))
REVERSED = (N4, WRONG_RUN, REPAIR_RUN, N3, N2, N1)
HALF_STAGED = (N1, REPAIR_RUN, WRONG_RUN, N4, N3, N2)


@pytest.fixture
def fresh_sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(invoices=20, seed=11) as handle:
        yield handle


def _live_ids(conn: Any) -> set[str]:
    return {str(r[0]) for r in _rows(conn, "SELECT source_id FROM erp_staging.ar_invoices")}


def _delete_drafts_of_both_nights(sandbox: SandboxHandle, of_night1: set[str]) -> tuple[list[str], list[str]]:
    """Drafts deleted one at a time until one staged by night 1 and one created after it are gone."""
    deleted: list[str] = []
    for _ in range(40):
        applied = sandbox.admin.mutate(1, kinds=["delete_draft_invoice"])["applied"]
        deleted += [c["id"] for c in applied if c["kind"] == "delete_draft_invoice"]
        early = sorted(set(deleted) & of_night1)
        if early and set(deleted) - of_night1:
            return early, sorted(set(deleted) - of_night1)
    raise AssertionError(f"the sandbox deleted no draft of both nights: {deleted}")


def _wrong_tombstone(conn: Any, redis_client: Any, ns: str, source_id: str, report_id: int) -> None:
    """What a repair stages when the SaaS answers 404 `resource_missing` for a record that exists (ADR
    0020: a wrong tombstone, healed by the next read of the record)."""
    period_end = datetime.now(UTC) + timedelta(days=1)
    key = BatchKey(
        WRONG_RUN, "stripe", "invoices", datetime(2020, 1, 1, tzinfo=UTC), period_end,
        tombstone_input_sha256("stripe", "invoices", "ar_invoices", [source_id]),
    )  # fmt: skip
    request = TombstoneRequest(
        key=key, primary_table="ar_invoices", child_tables=("ar_invoice_lines",),
        gone=(GoneRecord(source_id, Evidence.RESOURCE_MISSING, f"No such invoice: '{source_id}'"),),
        report_id=report_id, looked_up_at=datetime.now(UTC),
    )  # fmt: skip
    staged = stage_tombstones(
        conn, RedisLedger(redis_client, namespace=ns), request, batch_id=next_batch_id(redis_client, ns, conn)
    )
    assert staged.tombstoned == [source_id]


@pytest.fixture
def gone_and_back(
    fresh_sandbox: SandboxHandle, sftp: Any, db: Any, redis_client: Any, redis_namespace: str
) -> dict[str, Any]:
    """Night 1 stages some drafts, night 2 more; drafts of both are deleted, night 3 cannot see it, and a
    repair tombstones them. Then a live invoice is tombstoned on a wrong answer, and night 4 reads it
    live again, newer. Everything is backed up."""
    sandbox, ns = fresh_sandbox, redis_namespace

    def night(run_id: str) -> None:
        time.sleep(1.1)  # versions are whole seconds: each night is newer than what came before
        _full_refresh(sandbox, db, redis_client, ns, run_id)

    sandbox.admin.mutate(4, kinds=["new_draft_invoice"])
    night(N1)
    of_night1 = _live_ids(db)
    sandbox.admin.mutate(4, kinds=["new_draft_invoice"])
    night(N2)
    early, late = _delete_drafts_of_both_nights(sandbox, of_night1)
    night(N3)
    period = {
        "period_start": "2020-01-01T00:00:00Z", "period_end": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        "streams": ["invoices"], "repair": True,
    }  # fmt: skip
    time.sleep(1.1)
    outcome = run_request(
        conn=db, clients=SourceClients({"stripe": _client(sandbox)}), request=parse_request(period, now=datetime.now(UTC)),
        redis_client=redis_client, namespace=ns, run_id=REPAIR_RUN,
    )  # fmt: skip
    assert outcome.repair is not None and outcome.repair.tombstones["invoices"].tombstoned == sorted(
        early + late
    )
    [(came_back,)] = _rows(
        db,
        "SELECT min(h.source_id) FROM erp_staging.ar_invoices h WHERE h.interface_status = 'PENDING'"
        " AND EXISTS (SELECT 1 FROM erp_staging.ar_invoice_lines l WHERE l.invoice_source_id = h.source_id)",
    )
    time.sleep(1.1)
    _wrong_tombstone(db, redis_client, ns, came_back, outcome.repair.report_id)
    night(N4)
    assert drain_outbox(sftp, db).runs == [N1, N2, N3, REPAIR_RUN, WRONG_RUN, N4]
    return {"early": early, "late": late, "came_back": came_back}


@pytest.fixture
def restored_in_order(
    gone_and_back: dict[str, Any], sftp: Any, redis_client: Any
) -> Iterator[tuple[Any, RedisLedger]]:
    """The same backups restored in order (one date range) into another empty database."""
    for conn, ledger in another_database(redis_client):
        assert restore(sftp, conn, ledger, **EVERYTHING).runs == [N1, N2, N3, REPAIR_RUN, WRONG_RUN, N4]
        yield conn, ledger


def _evidence_of(conn: Any, ids: list[str]) -> list[tuple[Any, ...]]:
    """What each batch recorded of these records, sorted, without the batch and the `not_staged` rows (a
    record restored after its document has one such row, then the batch that tombstoned it)."""
    return sorted(r for r in _evidence(conn) if r[0] in ids and r[-1] != "not_staged")


@pytest.mark.parametrize("order", [REVERSED, HALF_STAGED], ids=["reversed", "half-staged"])
def test_a_record_staged_newer_than_its_waiting_tombstone_stays_live_and_the_rest_end_as_in_order(
    order: tuple[str, ...],
    gone_and_back: dict[str, Any],
    restored_in_order: tuple[Any, RedisLedger],
    sftp: Any,
    empty_database: tuple[Any, RedisLedger],
) -> None:
    conn, ledger = empty_database
    expected, _ = restored_in_order
    gone = sorted(gone_and_back["early"] + gone_and_back["late"])
    came_back = gone_and_back["came_back"]

    results = _restore_each(sftp, conn, ledger, order)

    # The deleted drafts tombstoned, the record that came back live, lines included, as in order.
    assert _tombstones(conn, [*gone, came_back]) == _tombstones(expected, [*gone, came_back])
    assert {s for s, _, _ in _tombstones(conn, gone).values()} == {"DELETED"}
    assert {s for s, _, _ in _tombstones(conn, [came_back]).values()} == {"PENDING"}
    assert _staging_but_versions(conn) == _staging_but_versions(expected)
    assert _evidence_of(conn, gone) == _evidence_of(expected, gone)
    assert _waiting(conn) == [] and results[-1].tombstones_waiting == 0
    assert _ledger_entries(ledger, "ar_invoices", gone) == [None] * len(gone)
    if order == REVERSED:
        # Both documents restored before any record: all wait; night 4 stages the wrong one's record
        # newer (it stays live, nothing is written), night 2 the drafts (tombstoned).
        assert [r.tombstones_waiting for r in results] == [0, 0, len(gone), len(gone), 0, 0]
        assert _resolutions(conn) == dict.fromkeys(gone, "tombstoned")
        assert [r.tombstoned_after_waiting for r in results] == [0, 0, 0, 0, len(gone), 0]
    else:
        # Night 1 staged the early drafts: tombstoned with the document; the late ones wait for night 2.
        late = gone_and_back["late"]
        assert [r.tombstones_waiting for r in results] == [0, len(late), len(late), len(late), len(late), 0]
        assert results[1].tombstoned == len(gone_and_back["early"])
        assert results[-1].tombstoned_after_waiting == len(late)
        assert _resolutions(conn) == dict.fromkeys(late, "tombstoned")
        # The document is in the outbox once, with its first batch, and nothing is left to upload.
        assert _rows(conn, "SELECT remote_path FROM erp_sync.outbox WHERE backed_up_at IS NULL") == []
