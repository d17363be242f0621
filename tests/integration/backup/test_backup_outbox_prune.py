"""Pruning the outbox (V031): a page's content leaves Postgres only after its SFTP copy has been
verified for `keep_days`; the row keeps what a later manifest of its run must list, and a run that
gets a new page afterwards is backed up again against the copies on the server."""

from __future__ import annotations

import json
from typing import Any

import psycopg2
import pytest
from backup_helpers import add_batch, stripe_list_body
from test_backup_drain import T0, _customers, _two_runs

from erp_sync.backup import drain_outbox
from erp_sync.backup.errors import RemoteVerificationError
from erp_sync.backup.layout import manifest_path
from erp_sync.backup.remote import read_back, remove
from erp_sync.store.outbox import pending_summary, prune_contents, rows_for_run

pytestmark = pytest.mark.integration


def _age_backups(db: Any, run_id: str, days: int) -> None:
    with db.cursor() as cur:
        cur.execute(
            "UPDATE erp_sync.outbox SET backed_up_at = now() - make_interval(days => %s) WHERE run_id = %s",
            (days, run_id),
        )
    db.commit()


def _contents(db: Any, run_id: str) -> list[int | None]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT octet_length(content_gzip) FROM erp_sync.outbox WHERE run_id = %s ORDER BY outbox_id",
            (run_id,),
        )
        return [r[0] for r in cur.fetchall()]


def _drained_and_aged(sftp: Any, db: Any, days: int = 40) -> tuple[str, str]:
    run_a, run_b = _two_runs(db)
    drain_outbox(sftp, db)
    _age_backups(db, run_a, days)
    return run_a, run_b


def test_only_contents_backed_up_longer_than_keep_days_are_cleared(sftp: Any, db: Any) -> None:
    run_a, run_b = _drained_and_aged(sftp, db)
    sizes_before = _contents(db, run_a)

    pruned = prune_contents(db, keep_days=30)
    db.commit()

    assert pruned.pages == 3 and pruned.bytes == sum(size or 0 for size in sizes_before)
    assert _contents(db, run_a) == [None, None, None]
    assert all(_contents(db, run_b))  # backed up today: kept
    for row in rows_for_run(db, run_a):  # what the next manifest of the run needs stays
        assert row.pruned and row.remote_path and row.backup_sha256
        data, digest = read_back(sftp, row.remote_path)
        assert (digest, len(data)) == (row.backup_sha256, row.backup_size) and row.raw_size
    assert prune_contents(db, keep_days=30).pages == 0


def test_rows_backed_up_before_v031_get_their_sizes_then_lose_their_content(sftp: Any, db: Any) -> None:
    run_a, _ = _drained_and_aged(sftp, db)
    expected = {row.outbox_id: (row.backup_size, row.raw_size) for row in rows_for_run(db, run_a)}
    with db.cursor() as cur:
        cur.execute(
            "UPDATE erp_sync.outbox SET backup_size = NULL, raw_size = NULL WHERE run_id = %s", (run_a,)
        )
    db.commit()

    assert prune_contents(db, keep_days=30).pages == 3
    db.commit()

    assert {row.outbox_id: (row.backup_size, row.raw_size) for row in rows_for_run(db, run_a)} == expected


def test_a_pruned_run_with_a_new_page_is_backed_up_against_the_copies_on_the_server(
    sftp: Any, db: Any
) -> None:
    run_a, _ = _drained_and_aged(sftp, db)
    prune_contents(db, keep_days=30)
    db.commit()
    add_batch(db, batch_id=104, run_id=run_a, pages=[stripe_list_body(_customers(2, "d"))], created_at=T0)

    result = drain_outbox(sftp, db)

    assert result.runs == [run_a] and result.files == 1 and result.rows_marked == 1  # only the new page
    manifest = json.loads(read_back(sftp, manifest_path(run_a))[0])
    assert [f["batch_id"] for f in manifest["files"]] == [101, 101, 102, 104]
    for entry in manifest["files"]:
        data, digest = read_back(sftp, entry["path"])
        assert (digest, len(data)) == (entry["sha256_gz"], entry["size"])
    assert pending_summary(db) == []


def test_a_pruned_page_whose_backup_is_gone_fails_the_drain_naming_it(sftp: Any, db: Any) -> None:
    run_a, _ = _drained_and_aged(sftp, db)
    prune_contents(db, keep_days=30)
    db.commit()
    gone = rows_for_run(db, run_a)[0].remote_path
    assert gone and remove(sftp, gone)
    add_batch(db, batch_id=104, run_id=run_a, pages=[stripe_list_body(_customers(1, "e"))], created_at=T0)

    with pytest.raises(RemoteVerificationError, match=f"{gone}.*outbox copy was pruned"):
        drain_outbox(sftp, db)

    assert [s.pending_pages for s in pending_summary(db)] == [1]  # the new page waits, marked nothing


def test_a_page_not_yet_backed_up_cannot_lose_its_content(db: Any) -> None:
    run_a, _ = _two_runs(db)
    with (
        pytest.raises(psycopg2.errors.CheckViolation, match="outbox_pruned_only_after_backup"),
        db.cursor() as cur,
    ):
        cur.execute("UPDATE erp_sync.outbox SET content_gzip = NULL WHERE run_id = %s", (run_a,))
    db.rollback()
    assert prune_contents(db, keep_days=1).pages == 0
    assert all(_contents(db, run_a))


def test_keep_days_below_one_is_refused_before_any_write(sftp: Any, db: Any) -> None:
    run_a, _ = _drained_and_aged(sftp, db)
    with pytest.raises(ValueError, match="keep_days must be at least 1, not 0"):
        prune_contents(db, keep_days=0)
    assert all(_contents(db, run_a))
