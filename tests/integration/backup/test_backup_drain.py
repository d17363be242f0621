"""Outbox drain to a real OpenSSH SFTP server: upload, verify, manifest, mark; outages and host keys."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import paramiko
import pytest
from backup_helpers import add_batch, open_sftp, outbox_state, stripe_list_body

from erp_sync.backup import drain_outbox
from erp_sync.backup.drain import backup_report
from erp_sync.backup.errors import BackupTargetUnavailable, OutboxCorruptError, PinnedHostKeyMismatch
from erp_sync.backup.layout import manifest_path
from erp_sync.backup.remote import makedirs, put_verified, read_back
from erp_sync.store.outbox import pending_summary

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def _customers(n: int, prefix: str) -> list[dict[str, Any]]:
    return [
        {"id": f"cus_{prefix}{i}", "object": "customer", "name": f"C {i}", "created": 1_700_000_000 + i}
        for i in range(n)
    ]


def _two_runs(db: Any) -> tuple[str, str]:
    run_a, run_b = f"scheduled__{uuid.uuid4().hex[:6]}", f"manual__{uuid.uuid4().hex[:6]}+00:00"
    add_batch(
        db,
        batch_id=101,
        run_id=run_a,
        pages=[stripe_list_body(_customers(3, "a")), stripe_list_body(_customers(2, "b"))],
        created_at=T0,
        cursor_before=T0 - timedelta(days=1),
        window_start=T0 - timedelta(days=1),
        window_end=T0,
    )
    add_batch(
        db,
        batch_id=102,
        run_id=run_a,
        stream="invoices",
        pages=[stripe_list_body([{"id": "in_1"}])],
        created_at=T0,
        cursor_before=T0 - timedelta(days=1),
        cursor_after=T0,
        window_start=T0 - timedelta(days=1),
        window_end=T0,
    )
    add_batch(
        db,
        batch_id=103,
        run_id=run_b,
        pages=[stripe_list_body(_customers(1, "c"))],
        created_at=T0 + timedelta(days=1),
    )
    return run_a, run_b


def test_put_verified_is_atomic_and_reads_back(sftp: Any, sftp_server: Any, remote_dir: str) -> None:
    data = b"x" * 300_000 + b"end"
    remote = put_verified(sftp, "deep/er/file.bin", data)
    assert remote.sha256 == hashlib.sha256(data).hexdigest() and remote.size == len(data)
    on_disk = sftp_server.data_dir / remote_dir / "deep" / "er"
    assert (on_disk / "file.bin").read_bytes() == data
    assert sorted(p.name for p in on_disk.iterdir()) == ["file.bin"]  # no .tmp- left behind
    put_verified(sftp, "deep/er/file.bin", b"replaced")  # atomic replace of an existing file
    assert read_back(sftp, "deep/er/file.bin")[0] == b"replaced"


def test_drain_uploads_verifies_and_marks_every_page(sftp: Any, db: Any) -> None:
    run_a, run_b = _two_runs(db)
    assert {(s.stream, s.pending_pages, s.pending_records) for s in pending_summary(db)} == {
        ("customers", 3, 6),
        ("invoices", 1, 1),
    }

    result = drain_outbox(sftp, db)

    assert result.runs == [run_a, run_b] and result.files == 4 and result.rows_marked == 4
    assert result.records == 7
    state = outbox_state(db)
    assert len(state) == 4 and all(path for _, path, _ in state)
    for _, path, sha in state:
        data, digest = read_back(sftp, path)
        assert digest == sha
        assert path.endswith(".json.gz") and gzip.decompress(data).startswith(b'{"object": "list"')
    assert state[0][1] == f"raw/stripe/customers/2026/11/20/{run_a}/101-1.json.gz"
    assert "manual__" in state[3][1] and "+00:00" in state[3][1] and "/2026/11/21/" in state[3][1]
    assert pending_summary(db) == []
    assert drain_outbox(sftp, db).runs == []  # nothing pending: a no-op


def test_a_redone_run_sweeps_what_interrupted_uploads_left(sftp: Any, db: Any) -> None:
    """A run whose upload died half-way left `.tmp-` files where it was writing; the drain that redoes
    it deletes those an hour old, and never a temporary file young enough to be an upload in flight."""
    run_a, _ = _two_runs(db)
    run_dir = f"raw/stripe/customers/2026/11/20/{run_a}"
    makedirs(sftp, run_dir)
    makedirs(sftp, "manifests")
    two_hours_ago = time.time() - 7200
    leftovers = [f"{run_dir}/.tmp-101-1.json.gz-0a1b2c3d4e5f", "manifests/.tmp-old.json-000000000000"]
    for path in [*leftovers, f"{run_dir}/.tmp-101-2.json.gz-ffffffffffff", f"{run_dir}/notes.txt"]:
        with sftp.open(path, "wb") as handle:
            handle.write(b"partial")
    for path in [*leftovers, f"{run_dir}/notes.txt"]:
        sftp.utime(path, (two_hours_ago, two_hours_ago))

    result = drain_outbox(sftp, db)

    assert result.stale_uploads_removed == 2 and result.as_dict()["stale_uploads_removed"] == 2
    names = set(sftp.listdir(run_dir))
    assert ".tmp-101-1.json.gz-0a1b2c3d4e5f" not in names
    assert {".tmp-101-2.json.gz-ffffffffffff", "notes.txt", "101-1.json.gz", "101-2.json.gz"} <= names
    assert not any(name.startswith(".tmp-") for name in sftp.listdir("manifests"))
    assert drain_outbox(sftp, db).stale_uploads_removed == 0  # nothing pending: nothing swept


def test_manifest_hashes_counts_and_cursors_verify(sftp: Any, db: Any) -> None:
    run_a, _ = _two_runs(db)
    drain_outbox(sftp, db)
    manifest = json.loads(read_back(sftp, manifest_path(run_a))[0])

    assert manifest["run_id"] == run_a and manifest["batch_ids"] == [101, 102]
    assert manifest["totals"] == {
        "files": 3,
        "records": 6,
        "bytes": sum(f["size"] for f in manifest["files"]),
        "raw_bytes": sum(f["raw_size"] for f in manifest["files"]),
    }
    for entry in manifest["files"]:
        gz, gz_sha = read_back(sftp, entry["path"])
        assert gz_sha == entry["sha256_gz"] and len(gz) == entry["size"]
        raw = gzip.decompress(gz)
        assert hashlib.sha256(raw).hexdigest() == entry["sha256_raw"]
        assert len(json.loads(raw)["data"]) == entry["record_count"]
        assert entry["url"].startswith("https://api.example/v1/") and entry["page_meta"]["mode"] == "full"
    assert manifest["streams"]["stripe/invoices"] == {
        "cursor_before": (T0 - timedelta(days=1)).isoformat(),
        "cursor_after": T0.isoformat(),
    }
    # customers' batch did not move the cursor: before == after
    assert manifest["streams"]["stripe/customers"]["cursor_after"] == (T0 - timedelta(days=1)).isoformat()
    assert [b["batch_id"] for b in manifest["batches"]] == [101, 102]


def test_pending_summary_reports_count_and_oldest_age(db: Any) -> None:
    old = datetime.now(UTC) - timedelta(hours=5)
    add_batch(db, batch_id=7, run_id="r1", pages=[stripe_list_body(_customers(2, "x"))], created_at=old)
    add_batch(db, batch_id=8, run_id="r2", pages=[stripe_list_body(_customers(1, "y"))])
    [backlog] = pending_summary(db)
    assert (backlog.stream, backlog.pending_pages, backlog.pending_records) == ("customers", 2, 3)
    assert backlog.oldest_created_at == old
    assert 5 * 3600 - 60 <= backlog.oldest_age_seconds < 6 * 3600
    assert backlog.as_dict()["oldest_age_seconds"] == backlog.oldest_age_seconds


def test_sftp_outage_fails_clearly_marks_nothing_then_drains(
    sftp_server: Any, sftp_conn_env: str, db: Any, remote_dir: str
) -> None:
    run_a, run_b = _two_runs(db)
    sftp_server.stop()
    try:
        with pytest.raises(BackupTargetUnavailable) as refused:
            open_sftp(sftp_conn_env, conn_retry_attempts=1)
        assert f"127.0.0.1:{sftp_server.port}" in str(refused.value)
        assert "unreachable" in str(refused.value)
    finally:
        sftp_server.start()
    assert all(path is None for _, path, _ in outbox_state(db))

    # A link that dies mid-session: the drain fails naming the server, and marks nothing.
    client = open_sftp(sftp_conn_env)
    client.mkdir(remote_dir)
    client.chdir(remote_dir)
    client.get_channel().get_transport().close()
    with pytest.raises(BackupTargetUnavailable) as broken:
        drain_outbox(client, db)
    assert f"127.0.0.1:{sftp_server.port}" in str(broken.value)
    assert all(path is None for _, path, _ in outbox_state(db))

    client = open_sftp(sftp_conn_env)
    client.chdir(remote_dir)
    result = drain_outbox(client, db)
    assert result.runs == [run_a, run_b] and result.rows_marked == 4
    assert all(path for _, path, _ in outbox_state(db))
    client.close()


def test_wrong_host_key_is_refused(sftp_server: Any, sftp_conn_env: str, tmp_path: Any) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other_key = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    conn = json.loads(sftp_conn_env)
    assert conn["extra"]["host_key"] != other_key
    conn["extra"]["host_key"] = other_key

    with pytest.raises(paramiko.BadHostKeyException) as refused:
        open_sftp(json.dumps(conn), conn_retry_attempts=1)

    assert isinstance(refused.value, PinnedHostKeyMismatch)
    message = str(refused.value)
    assert f"127.0.0.1:{sftp_server.port}" in message and "pins" in message and "host_key" in message


def test_damaged_outbox_page_is_not_backed_up(sftp: Any, db: Any) -> None:
    [outbox_id] = add_batch(db, batch_id=5, run_id="r-bad", pages=[stripe_list_body(_customers(1, "z"))])
    with db.cursor() as cur:
        cur.execute("UPDATE erp_sync.outbox SET sha256 = %s WHERE outbox_id = %s", ("0" * 64, outbox_id))
    db.commit()
    with pytest.raises(OutboxCorruptError, match=f"outbox row {outbox_id}"):
        drain_outbox(sftp, db)
    assert outbox_state(db) == [(outbox_id, None, None)]
    assert "manifests" not in sftp.listdir(".")


def test_backup_report_lands_under_reports_by_month(sftp: Any) -> None:
    body = b'{"status": "DRIFT"}'
    remote = backup_report(sftp, "drift-2026-11-26-v1.json", body, now=datetime(2026, 11, 26, 3, tzinfo=UTC))
    assert remote.path == "reports/2026/11/drift-2026-11-26-v1.json"
    assert read_back(sftp, remote.path) == (body, hashlib.sha256(body).hexdigest())
    with pytest.raises(ValueError, match="plain file name"):
        backup_report(sftp, "../escape.json", body)


def test_restore_of_an_undeclared_stream_is_refused_before_any_write(sftp: Any, db: Any) -> None:
    from erp_sync.backup.errors import ManifestError
    from erp_sync.backup.restore import restore

    body = stripe_list_body(_customers(2, "u"))
    add_batch(db, batch_id=1, run_id="r-ok", pages=[body])
    add_batch(db, batch_id=2, run_id="r-ok", stream="mystery", pages=[body])
    drain_outbox(sftp, db)
    with pytest.raises(ManifestError, match="stripe/mystery"):
        restore(sftp, db, ledger=None, run_id="r-ok", next_batch_id=lambda: 99)
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM erp_staging.customers")
        assert cur.fetchone()[0] == 0  # the customers batch before it was not loaded either
    db.rollback()


def test_two_drains_never_run_at_once(sftp: Any, db: Any, migrated_pg_dsn: str) -> None:
    import psycopg2

    from erp_sync.backup.drain import DRAIN_LOCK_KEY
    from erp_sync.backup.errors import DrainBusy

    add_batch(db, batch_id=1, run_id="r-busy", pages=[stripe_list_body(_customers(1, "k"))])
    other = psycopg2.connect(migrated_pg_dsn)
    try:
        with other.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (DRAIN_LOCK_KEY,))
        with pytest.raises(DrainBusy):
            drain_outbox(sftp, db)
        assert all(path is None for _, path, _ in outbox_state(db))
    finally:
        # Unlock explicitly: closing the connection also releases it, but only once the server
        # backend has exited, which can be after the next line runs.
        with other.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (DRAIN_LOCK_KEY,))
        other.close()
    assert drain_outbox(sftp, db).rows_marked == 1
