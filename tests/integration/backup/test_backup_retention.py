"""Retention over a real SFTP server: old runs go only when a newer verified backup exists, and never
while the outbox still holds an unverified page of theirs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from backup_helpers import add_batch, stripe_list_body

from erp_sync.backup import drain_outbox
from erp_sync.backup.layout import manifest_path
from erp_sync.backup.remote import exists
from erp_sync.backup.retention import apply_retention

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


def _run(db: Any, batch_id: int, run_id: str, days_ago: int) -> None:
    body = stripe_list_body([{"id": f"cus_{batch_id}", "object": "customer", "created": 1}])
    add_batch(db, batch_id=batch_id, run_id=run_id, pages=[body], created_at=NOW - timedelta(days=days_ago))


def _raw_paths(db: Any, run_id: str) -> list[str]:
    with db.cursor() as cur:
        cur.execute("SELECT remote_path FROM erp_sync.outbox WHERE run_id = %s ORDER BY outbox_id", (run_id,))
        paths = [r[0] for r in cur.fetchall()]
    db.commit()
    return paths


def _present(sftp: Any, db: Any, run_id: str) -> bool:
    files = [exists(sftp, p) for p in _raw_paths(db, run_id)]
    manifest = exists(sftp, manifest_path(run_id))
    assert all(files) == manifest and any(files) == manifest  # a run is whole or gone
    return manifest


def test_retention_deletes_only_superseded_and_verified_runs(sftp: Any, db: Any) -> None:
    for batch_id, run_id, days in [(1, "old-a", 45), (2, "old-b", 40), (3, "recent", 2)]:
        _run(db, batch_id, run_id, days)
    drain_outbox(sftp, db)
    # old-b's page is back to "not yet verified" (say, its manifest must be rewritten): keep it.
    with db.cursor() as cur:
        cur.execute("UPDATE erp_sync.outbox SET backed_up_at = NULL WHERE run_id = 'old-b'")
    db.commit()

    result = apply_retention(sftp, db, keep_days=30, now=NOW)

    assert result.anchor_run_id == "recent"
    assert result.deleted_runs == ["old-a"] and result.deleted_files == 1
    assert result.kept_unverified == ["old-b"]
    assert not _present(sftp, db, "old-a")
    assert _present(sftp, db, "old-b") and _present(sftp, db, "recent")


def test_retention_deletes_nothing_without_a_newer_verified_backup(
    sftp: Any, db: Any, sftp_server: Any, remote_dir: str
) -> None:
    _run(db, 1, "old", 45)
    _run(db, 2, "newest", 1)
    drain_outbox(sftp, db)
    # The newest backup is damaged on the server: it cannot vouch for deleting anything older.
    [newest_path] = _raw_paths(db, "newest")
    damaged = sftp_server.data_dir / remote_dir / newest_path
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))

    result = apply_retention(sftp, db, keep_days=30, now=NOW)

    assert result.anchor_run_id == "old"  # the newest manifest that still verifies
    assert result.deleted_runs == []
    assert _present(sftp, db, "old")


def test_retention_keeps_the_only_backup_even_when_old(sftp: Any, db: Any) -> None:
    _run(db, 1, "lonely", 90)
    drain_outbox(sftp, db)
    result = apply_retention(sftp, db, keep_days=30, now=NOW)
    assert result.anchor_run_id == "lonely" and result.deleted_runs == []
    assert _present(sftp, db, "lonely")
    with pytest.raises(ValueError, match="keep_days"):
        apply_retention(sftp, db, keep_days=0, now=NOW)
