"""Backups nobody restored from are hopes: sync the sandbox, back up to a real SFTP server, then restore
over full staging (no row written), into emptied staging (rebuilt exactly), and from a corrupted file
(refused before any write, naming the file)."""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from backup_helpers import open_sftp

from erp_sync.backup import RestoreIntegrityError, drain_outbox
from erp_sync.backup.errors import BackupTargetUnavailable, ManifestError
from erp_sync.backup.layout import manifest_path
from erp_sync.backup.remote import read_back
from erp_sync.backup.restore import restore, validate_restore_params
from erp_sync.clients.auth import BearerSecretKey
from erp_sync.clients.client import SaaSClient
from erp_sync.core.batch import open_envelope
from erp_sync.pipeline import WindowRequest, sync_stream
from erp_sync.sandbox.testing import SandboxHandle, running_sandbox
from erp_sync.store.counters import next_batch_id
from erp_sync.store.ledger import RedisLedger
from erp_sync.streams import STREAMS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STREAM_NAMES = ("customers", "invoices", "charges", "refunds", "credit_notes")
STAGING = ("customers", "ar_invoices", "ar_invoice_lines", "ar_receipts", "ar_refunds", "ar_credit_memos")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(invoices=40, seed=11) as handle:
        yield handle


def _sync(sandbox: SandboxHandle, conn: Any, redis_client: Any, ns: str, run_id: str, **window: Any) -> None:
    client = SaaSClient(sandbox.base_url, BearerSecretKey(sandbox.secret_key), page_size=10)
    for name in STREAM_NAMES:
        sync_stream(
            spec=STREAMS[name], client=client, conn=conn, redis_client=redis_client, run_id=run_id,
            window=WindowRequest(**window), namespace=ns, batch_records=25,
        )  # fmt: skip


def _staging(conn: Any, *, with_load_columns: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    """Every staging row, sorted; by default without the columns a reload legitimately changes."""
    snapshot = {}
    with conn.cursor() as cur:
        for table in STAGING:
            cur.execute(f"SELECT * FROM erp_staging.{table}")
            names = [d[0] for d in cur.description]
            drop = set() if with_load_columns else {"sync_batch_id", "loaded_at"}
            keep = [i for i, n in enumerate(names) if n not in drop]
            snapshot[table] = sorted(tuple(row[i] for i in keep) for row in cur.fetchall())
    conn.commit()
    return snapshot


def _count(conn: Any, sql: str) -> int:
    with conn.cursor() as cur:
        cur.execute(sql)
        value = int(cur.fetchone()[0])
    conn.commit()
    return value


def _empty_staging(conn: Any) -> None:
    with conn.cursor() as cur:  # the test's login is a superuser: it may empty staging, the loader may not
        cur.execute("TRUNCATE " + ", ".join(f"erp_staging.{t}" for t in STAGING))
    conn.commit()


@pytest.fixture
def synced(
    sandbox: SandboxHandle, sftp: Any, db: Any, redis_client: Any, redis_namespace: str
) -> dict[str, Any]:
    """Two nightly runs (full, then incremental after changes in the SaaS), both backed up."""
    _sync(sandbox, db, redis_client, redis_namespace, "scheduled__night1", full_refresh=True,
          window_end=datetime.now(UTC))  # fmt: skip
    # Changes a minute ago: inside the next incremental window (cursor - lookback .. now).
    changed = sandbox.admin.mutate(8, at=int(time.time()) - 60)
    assert changed["applied"]
    _sync(
        sandbox, db, redis_client, redis_namespace, "scheduled__night2", data_interval_end=datetime.now(UTC)
    )
    night2 = "SELECT sum(extracted) FROM erp_sync.sync_batches WHERE run_id = 'scheduled__night2'"
    assert _count(db, night2) >= len(changed["applied"])  # the deltas were read (events per change)
    drained = drain_outbox(sftp, db)
    assert drained.runs == ["scheduled__night1", "scheduled__night2"]
    return {"ledger": RedisLedger(redis_client, namespace=redis_namespace), "drained": drained}


def test_backups_hold_every_page_and_every_hash_verifies(synced: dict[str, Any], sftp: Any, db: Any) -> None:
    pages = _count(db, "SELECT count(*) FROM erp_sync.outbox")
    assert pages > len(STREAM_NAMES) and synced["drained"].files == pages
    assert _count(db, "SELECT count(*) FROM erp_sync.outbox WHERE backed_up_at IS NULL") == 0
    files = 0
    for run in ("scheduled__night1", "scheduled__night2"):
        manifest = json.loads(read_back(sftp, manifest_path(run))[0])
        for entry in manifest["files"]:
            gz, digest = read_back(sftp, entry["path"])
            assert digest == entry["sha256_gz"]
            assert hashlib.sha256(gzip.decompress(gz)).hexdigest() == entry["sha256_raw"]
            files += 1
    assert files == pages


def test_restore_over_full_staging_writes_no_row(synced: dict[str, Any], sftp: Any, db: Any) -> None:
    before = _staging(db, with_load_columns=True)
    batches = _count(db, "SELECT count(*) FROM erp_sync.sync_batches")

    result = restore(sftp, db, synced["ledger"], date_from="2000-01-01", date_to="2100-01-01")

    assert result.runs == ["scheduled__night1", "scheduled__night2"]
    assert result.files_verified == synced["drained"].files
    assert result.rows_written == 0 and result.batches == 0 and result.batches_already_present > 0
    assert _staging(db, with_load_columns=True) == before
    assert _count(db, "SELECT count(*) FROM erp_sync.sync_batches") == batches


def test_restore_into_emptied_staging_rebuilds_it_exactly(
    synced: dict[str, Any], sandbox: SandboxHandle, sftp: Any, db: Any
) -> None:
    before = _staging(db)
    truth = sandbox.admin.truth(objects=False)["counts"]
    with db.cursor() as cur:
        cur.execute("SELECT content_gzip FROM erp_sync.outbox WHERE stream = 'invoices'")
        stored = [gzip.decompress(bytes(content)) for (content,) in cur.fetchall()]
    db.rollback()
    # some invoice pages were backed up as envelopes: the body as received + the line tails fetched
    assert any(open_envelope(page) is not None for page in stored)
    _empty_staging(db)
    assert all(rows == [] for rows in _staging(db).values())

    result = restore(sftp, db, synced["ledger"], date_from="2000-01-01", date_to="2100-01-01")

    assert result.loaded_new > 0 and result.rows_written > 0
    assert _staging(db) == before
    assert (len(before["ar_invoices"]), len(before["customers"])) == (truth["invoices"], truth["customers"])
    # the restored pages are not queued for another upload: they are the files just verified
    assert _count(db, "SELECT count(*) FROM erp_sync.outbox WHERE backed_up_at IS NULL") == 0


def test_a_retried_restore_counts_what_its_first_try_committed_as_present(
    synced: dict[str, Any], sftp: Any, db: Any, redis_client: Any, redis_namespace: str
) -> None:
    before = _staging(db)
    everything = {"date_from": "2000-01-01", "date_to": "2100-01-01"}
    _empty_staging(db)
    uninterrupted = restore(sftp, db, synced["ledger"], restore_run_id="manual__restore_once", **everything)
    _empty_staging(db)
    restore_run = "manual__restore_retried"
    handed_out: list[int] = []

    def dies_at_the_third_batch() -> int:
        if len(handed_out) == 2:
            raise RuntimeError("worker lost")
        handed_out.append(next_batch_id(redis_client, redis_namespace, db))
        return handed_out[-1]

    with pytest.raises(RuntimeError, match="worker lost"):
        restore(
            sftp, db, synced["ledger"], next_batch_id=dies_at_the_third_batch, restore_run_id=restore_run,
            **everything,
        )  # fmt: skip
    # As if the first try had also died between its second batch's commit and pointing that batch's
    # outbox rows at the backup: the retry must point them, not leave them to be uploaded again.
    with db.cursor() as cur:
        cur.execute(
            "UPDATE erp_sync.outbox SET backed_up_at = NULL, remote_path = NULL WHERE batch_id = %s",
            (handed_out[1],),
        )
        assert cur.rowcount > 0
    db.commit()

    retried = restore(sftp, db, synced["ledger"], restore_run_id=restore_run, **everything)

    # the first try's two batches are present, written by it, not by the retry
    assert retried.batches == uninterrupted.batches - 2
    assert retried.batches_already_present == uninterrupted.batches_already_present + 2
    restored_batches = f"SELECT count(*) FROM erp_sync.sync_batches WHERE run_id = '{restore_run}'"
    assert _count(db, restored_batches) == uninterrupted.batches
    assert _staging(db) == before
    assert _count(db, "SELECT count(*) FROM erp_sync.outbox WHERE backed_up_at IS NULL") == 0


def test_corrupted_backup_is_refused_before_any_write(
    synced: dict[str, Any], sftp: Any, db: Any, sftp_server: Any, remote_dir: str
) -> None:
    manifest = json.loads(read_back(sftp, manifest_path("scheduled__night2"))[0])
    victim = manifest["files"][-1]["path"]
    on_disk = sftp_server.data_dir / remote_dir / victim
    data = bytearray(on_disk.read_bytes())
    data[len(data) // 2] ^= 0x40  # one byte flipped
    on_disk.write_bytes(bytes(data))
    with db.cursor() as cur:
        cur.execute("TRUNCATE erp_staging.customers")
    db.commit()
    before = _staging(db, with_load_columns=True)
    batches = _count(db, "SELECT count(*) FROM erp_sync.sync_batches")

    with pytest.raises(RestoreIntegrityError) as refused:
        restore(sftp, db, synced["ledger"], date_from="2000-01-01", date_to="2100-01-01")

    assert victim in str(refused.value) and "nothing written" in str(refused.value)
    assert _staging(db, with_load_columns=True) == before  # customers still empty: nothing was loaded
    assert _count(db, "SELECT count(*) FROM erp_sync.sync_batches") == batches
    # The untouched run still restores on its own.
    result = restore(sftp, db, synced["ledger"], run_id="scheduled__night1")
    assert result.runs == ["scheduled__night1"] and result.rows_by_table.get("customers", 0) > 0


def test_outage_during_sync_delays_backup_and_loses_nothing(
    sandbox: SandboxHandle, sftp_server: Any, sftp_conn_env: str, db: Any, redis_client: Any,
    redis_namespace: str, remote_dir: str,
) -> None:  # fmt: skip
    sftp_server.stop()
    try:
        _sync(sandbox, db, redis_client, redis_namespace, "scheduled__outage", full_refresh=True,
              window_end=datetime.now(UTC))  # fmt: skip
        loaded = _count(db, "SELECT count(*) FROM erp_staging.ar_invoices")
        assert loaded > 0  # the loads committed without the backup target
        with pytest.raises(BackupTargetUnavailable, match=f"127.0.0.1:{sftp_server.port}"):
            open_sftp(sftp_conn_env, conn_retry_attempts=1)
    finally:
        sftp_server.start()
    pending = _count(db, "SELECT count(*) FROM erp_sync.outbox WHERE backed_up_at IS NULL")
    assert pending > 0

    client = open_sftp(sftp_conn_env)
    client.mkdir(remote_dir)
    client.chdir(remote_dir)
    drained = drain_outbox(client, db)
    assert drained.files == pending and drained.rows_marked == pending
    assert _count(db, "SELECT count(*) FROM erp_sync.outbox WHERE backed_up_at IS NULL") == 0
    manifest = json.loads(read_back(client, manifest_path("scheduled__outage"))[0])
    assert manifest["totals"]["records"] == _count(
        db, "SELECT coalesce(sum(record_count), 0) FROM erp_sync.outbox"
    )
    client.close()


def test_restore_parameters_are_validated_before_anything_happens(sftp: Any, db: Any) -> None:
    with pytest.raises(ValueError, match="either run_id or"):
        validate_restore_params("r1", "2026-01-01", None)
    with pytest.raises(ValueError, match="give a run_id or a date range"):
        validate_restore_params(None, None, None)
    with pytest.raises(ValueError, match="after date_to"):
        validate_restore_params(None, "2026-02-01", "2026-01-01")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        validate_restore_params(None, "yesterday", None)
    with pytest.raises(ManifestError, match="no backup of run 'nope'"):
        restore(sftp, db, ledger=None, run_id="nope")
