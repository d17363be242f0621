"""Drift reports come back with a restore from the backups (ADR 0025), against real Postgres, Redis, an
OpenSSH SFTP server and the sandbox. A sync, a reconcile that finds drift, its repair and re-check,
and a later reconcile write three reports; each is rendered, uploaded with its sidecar manifest, and
the drain backs up the pages. A restore into an empty database brings every report back as it was
(every column, total and item; its id, version and backup path); a restore into a database that
holds them writes nothing; a damaged, rewritten or clashing report stops the restore before any
write; a report backed up without a sidecar is counted and left."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from erp_sync.backup import ManifestError, RestoreIntegrityError, backup_report, drain_outbox
from erp_sync.backup.errors import ReportRestoreConflict
from erp_sync.backup.report_manifest import dumps as dump_sidecar
from erp_sync.backup.restore import restore
from erp_sync.clients.auth import BearerSecretKey
from erp_sync.clients.client import SaaSClient
from erp_sync.clients.sources import SourceClients
from erp_sync.core.reconcile import empty_items
from erp_sync.pipeline import WindowRequest, sync_stream
from erp_sync.reconcile_run import parse_request, run_request
from erp_sync.sandbox.testing import SandboxHandle, running_sandbox
from erp_sync.store import drift
from erp_sync.store.ledger import RedisLedger
from erp_sync.streams import STREAMS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVERYTHING = {"date_from": "2000-01-01", "date_to": "2100-01-01"}
REPAIR_RUN = "reconcile__repair"
REPORT_TABLES = ("drift_reports", "drift_report_totals", "drift_report_items")
ORDER = {
    "drift_reports": "report_id",
    "drift_report_totals": "report_id, stream, currency_code, status, metric",
    "drift_report_items": "report_id, item_no",
}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(invoices=30, seed=11) as handle:
        yield handle


def _client(sandbox: SandboxHandle) -> SaaSClient:
    return SaaSClient(sandbox.base_url, BearerSecretKey(sandbox.secret_key), page_size=20)


def _rows(conn: Any, sql: str, args: Any = ()) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        rows = cur.fetchall() if cur.description else []
    conn.commit()
    return rows


def _reports(conn: Any, *, with_xmin: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the report tables, every column (with `xmin`: proof that nothing was rewritten)."""
    extra = ", xmin::text" if with_xmin else ""
    return {t: _rows(conn, f"SELECT *{extra} FROM erp_sync.{t} ORDER BY {ORDER[t]}") for t in REPORT_TABLES}


def _staging_count(conn: Any) -> int:
    sql = (
        "SELECT (SELECT count(*) FROM erp_staging.ar_invoices) + (SELECT count(*) FROM erp_sync.sync_batches)"
    )
    return int(_rows(conn, sql)[0][0])


@pytest.fixture
def reported(
    sandbox: SandboxHandle, sftp: Any, db: Any, redis_client: Any, redis_namespace: str
) -> dict[str, Any]:
    """A sync, then new invoices the ERP lacks: a DRIFT report, its repair's re-check, a later OK
    report; each backed up with its sidecar, and the pages drained."""
    ns = redis_namespace
    sync_stream(
        spec=STREAMS["invoices"], client=_client(sandbox), conn=db, redis_client=redis_client,
        run_id="scheduled__night1", namespace=ns, batch_records=25,
        window=WindowRequest(full_refresh=True, window_end=datetime.now(UTC) + timedelta(days=1)),
    )  # fmt: skip
    sandbox.admin.mutate(3, kinds=["new_invoice"])
    time.sleep(1.1)
    period = {
        "period_start": "2020-01-01T00:00:00Z", "period_end": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        "streams": ["invoices"],
    }  # fmt: skip

    def backup(name: str, data: bytes) -> str:
        return str(backup_report(sftp, name, data).path)

    clients = SourceClients({"stripe": _client(sandbox)})
    first = run_request(
        conn=db, clients=clients, request=parse_request(period, now=datetime.now(UTC)), redis_client=redis_client,
        namespace=ns, dag_id="erp_drift_reconciliation", run_id="reconcile__first", backup=backup,
    )  # fmt: skip
    repaired = run_request(
        conn=db, clients=clients, request=parse_request(period | {"repair": True}, now=datetime.now(UTC)),
        redis_client=redis_client, namespace=ns, dag_id="erp_drift_reconciliation", run_id=REPAIR_RUN, backup=backup,
    )  # fmt: skip
    assert [r.status for r in first.reports + repaired.reports] == ["DRIFT", "OK"]
    drained = drain_outbox(sftp, db)
    assert drained.runs == ["scheduled__night1", REPAIR_RUN]
    reports = _reports(db)
    ids = [r[0] for r in reports["drift_reports"]]
    assert len(ids) == 2 and reports["drift_report_items"], reports
    return {"reports": reports, "ids": ids, "ledger": RedisLedger(redis_client, namespace=ns)}


def _sidecars(sftp_server: Any, remote_dir: str) -> list[Any]:
    """The sidecar manifests on the server, as local files of its data directory, oldest report first."""
    root = sftp_server.data_dir / remote_dir / "reports"
    return sorted(root.rglob("*.manifest.json"), key=lambda p: json.loads(p.read_bytes())["report_id"])


def _file_of(sidecar: Any, kind: str, sftp_server: Any, remote_dir: str) -> Any:
    return sftp_server.data_dir / remote_dir / json.loads(sidecar.read_bytes())["files"][kind]["path"]


def _assert_refused_with_nothing_written(conn: Any, refusal: BaseException, file_name: str) -> None:
    """The refusal names the file and says nothing was written; the database is still empty."""
    assert file_name in str(refusal) and "nothing written" in str(refusal)
    assert _staging_count(conn) == 0 and _reports(conn) == {t: [] for t in REPORT_TABLES}


def test_a_restore_into_an_empty_database_brings_every_report_back_as_it_was(
    reported: dict[str, Any], sftp: Any, empty_database: tuple[Any, RedisLedger]
) -> None:
    conn, ledger = empty_database

    result = restore(sftp, conn, ledger, **EVERYTHING, restore_run_id="restore__dr")

    # Every column of every report (id, version, created_at, backup_path, repair_of_report_id, ...),
    # every total and item, as in the database the reports were written in.
    assert _reports(conn) == reported["reports"]
    assert all(drift.verify_report(conn, report_id) for report_id in reported["ids"])
    repair_of = _rows(
        conn, "SELECT repair_of_report_id FROM erp_sync.drift_reports WHERE run_id = %s", (REPAIR_RUN,)
    )
    assert repair_of == [(reported["ids"][0],)]
    assert result.reports.restored == reported["ids"] and result.reports.already_present == []
    assert result.as_dict()["reports"] | {"restored_report_ids": None} == {
        "enabled": True, "selected": 2, "files_verified": 8, "restored": 2, "already_present": 0,
        "restored_report_ids": None, "without_manifest": 0, "without_manifest_files": [],
    }  # fmt: skip
    # A report written here afterwards takes an id after the restored ones, and the next version.
    later = drift.write_report(
        conn,
        drift.ReportHeader(
            period_start=reported["reports"]["drift_reports"][0][1],
            period_end=reported["reports"]["drift_reports"][0][2], streams=["invoices"], status="OK",
        ),
        [], empty_items(),
    )  # fmt: skip
    assert later.report_id > max(reported["ids"]) and later.version == 3

    # Restored again (a retry, or the next restore): nothing is written, every report counted present.
    before = _reports(conn, with_xmin=True)
    again = restore(sftp, conn, ledger, **EVERYTHING, restore_run_id="restore__dr2")
    assert again.reports.restored == [] and again.reports.already_present == reported["ids"]
    assert _reports(conn, with_xmin=True) == before


def test_a_restore_into_the_database_that_holds_the_reports_writes_nothing(
    reported: dict[str, Any], sftp: Any, db: Any
) -> None:
    before = _reports(db, with_xmin=True)

    result = restore(sftp, db, reported["ledger"], **EVERYTHING)

    assert result.reports.restored == [] and result.reports.already_present == reported["ids"]
    assert result.as_dict()["reports"]["already_present"] == 2
    assert _reports(db, with_xmin=True) == before


def test_one_runs_reports_are_restored_with_its_pages(
    reported: dict[str, Any], sftp: Any, empty_database: tuple[Any, RedisLedger]
) -> None:
    conn, ledger = empty_database

    result = restore(sftp, conn, ledger, run_id=REPAIR_RUN)

    assert result.runs == [REPAIR_RUN] and result.reports.restored == [reported["ids"][1]]
    assert _reports(conn)["drift_reports"] == reported["reports"]["drift_reports"][1:]


@pytest.mark.parametrize("kind", ["json", "html"])
def test_a_damaged_report_file_stops_the_restore_before_any_write(
    reported: dict[str, Any], sftp: Any, empty_database: tuple[Any, RedisLedger], sftp_server: Any,
    remote_dir: str, kind: str,
) -> None:  # fmt: skip
    conn, ledger = empty_database
    victim = _file_of(_sidecars(sftp_server, remote_dir)[1], kind, sftp_server, remote_dir)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit
    victim.write_bytes(bytes(data))

    with pytest.raises(RestoreIntegrityError) as refused:
        restore(sftp, conn, ledger, **EVERYTHING)

    _assert_refused_with_nothing_written(conn, refused.value, victim.name)


def test_an_unreadable_sidecar_stops_the_restore_before_any_write(
    reported: dict[str, Any],
    sftp: Any,
    empty_database: tuple[Any, RedisLedger],
    sftp_server: Any,
    remote_dir: str,
) -> None:
    """A sidecar that cannot be read could be a selected report's: the restore cannot tell, and refuses."""
    conn, ledger = empty_database
    sidecar = _sidecars(sftp_server, remote_dir)[0]
    sidecar.write_bytes(b"{not json")

    with pytest.raises(RestoreIntegrityError, match="not a JSON report manifest") as refused:
        restore(sftp, conn, ledger, **EVERYTHING)

    _assert_refused_with_nothing_written(conn, refused.value, sidecar.name)


def test_a_report_rewritten_with_its_sidecar_is_refused_before_any_write(
    reported: dict[str, Any],
    sftp: Any,
    empty_database: tuple[Any, RedisLedger],
    sftp_server: Any,
    remote_dir: str,
) -> None:
    """Sizes and hashes that match prove the file is the one the sidecar lists, not that it holds
    together: an amount changed in the JSON, and the sidecar rewritten to match, leaves the report's
    content hash wrong."""
    conn, ledger = empty_database
    sidecar = _sidecars(sftp_server, remote_dir)[0]
    victim = _file_of(sidecar, "json", sftp_server, remote_dir)
    report = json.loads(victim.read_bytes())
    report["items"][0]["saas_amount"] = "1.000" if report["items"][0]["saas_amount"] != "1.000" else "2.000"
    victim.write_bytes(json.dumps(report).encode())
    listed = json.loads(sidecar.read_bytes())
    rewritten = victim.read_bytes()
    listed["files"]["json"].update(size=len(rewritten), sha256=hashlib.sha256(rewritten).hexdigest())
    sidecar.write_bytes(dump_sidecar(listed))

    with pytest.raises(RestoreIntegrityError, match="hash to") as refused:
        restore(sftp, conn, ledger, **EVERYTHING)

    _assert_refused_with_nothing_written(conn, refused.value, victim.name)


def test_a_report_id_another_report_holds_stops_the_restore_before_any_write(
    reported: dict[str, Any], sftp: Any, empty_database: tuple[Any, RedisLedger]
) -> None:
    """The rebuilt database wrote a report of its own before the restore: its id is the first backed-up
    report's. Neither can be renumbered (a report's id is in its files), so the restore refuses."""
    conn, ledger = empty_database
    own = drift.write_report(
        conn,
        drift.ReportHeader(
            period_start=datetime(2026, 1, 1, tzinfo=UTC), period_end=datetime(2026, 1, 2, tzinfo=UTC),
            streams=["invoices"], status="OK",
        ),
        [], empty_items(),
    )  # fmt: skip
    assert own.report_id == reported["ids"][0]
    before = _reports(conn, with_xmin=True)

    with pytest.raises(ReportRestoreConflict, match="restore_reports=false") as refused:
        restore(sftp, conn, ledger, **EVERYTHING)

    assert f"report {own.report_id} v1" in str(refused.value) and "nothing written" in str(refused.value)
    assert _staging_count(conn) == 0 and _reports(conn, with_xmin=True) == before


def test_a_report_backed_up_without_a_sidecar_is_counted_and_left(
    reported: dict[str, Any],
    sftp: Any,
    empty_database: tuple[Any, RedisLedger],
    sftp_server: Any,
    remote_dir: str,
) -> None:
    """As a report backed up before sidecars existed. The re-check that names it in
    `repair_of_report_id` is restored all the same (V060)."""
    conn, ledger = empty_database
    first = _sidecars(sftp_server, remote_dir)[0]
    json_path = json.loads(first.read_bytes())["files"]["json"]["path"]
    first.unlink()

    result = restore(sftp, conn, ledger, **EVERYTHING)

    assert result.reports.without_manifest == [json_path]
    assert result.as_dict()["reports"]["without_manifest_files"] == [json_path]
    assert result.reports.restored == reported["ids"][1:]
    assert _reports(conn)["drift_reports"] == reported["reports"]["drift_reports"][1:]


def test_restore_reports_false_restores_staging_alone(
    reported: dict[str, Any],
    sftp: Any,
    empty_database: tuple[Any, RedisLedger],
    sftp_server: Any,
    remote_dir: str,
) -> None:
    conn, ledger = empty_database
    _sidecars(sftp_server, remote_dir)[0].write_bytes(b"not a manifest")  # not even read

    result = restore(sftp, conn, ledger, **EVERYTHING, restore_reports=False)

    assert result.loaded_new > 0 and result.as_dict()["reports"]["enabled"] is False
    assert _reports(conn) == {t: [] for t in REPORT_TABLES}
    with pytest.raises(ValueError, match="restore_reports must be true or false"):
        restore(sftp, conn, ledger, **EVERYTHING, restore_reports="no")  # type: ignore[arg-type]


def test_reports_are_restored_after_retention_removed_the_runs_pages(
    reported: dict[str, Any],
    sftp: Any,
    empty_database: tuple[Any, RedisLedger],
    sftp_server: Any,
    remote_dir: str,
) -> None:
    """Retention deletes a run's raw pages and manifest after `keep_days`; its reports stay on the server
    and are still restored. A range with neither still says that nothing matches."""
    conn, ledger = empty_database
    for manifest in (sftp_server.data_dir / remote_dir / "manifests").iterdir():
        manifest.unlink()

    result = restore(sftp, conn, ledger, **EVERYTHING)

    assert result.runs == [] and result.reports.restored == reported["ids"]
    assert _reports(conn) == reported["reports"]
    with pytest.raises(ManifestError, match="no backed-up run"):
        restore(sftp, conn, ledger, date_from=date(2001, 1, 1), date_to=date(2001, 1, 2))
