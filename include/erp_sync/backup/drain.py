"""Drain the outbox of raw pages to SFTP, one run at a time, and back up drift reports.

For each run with pending pages: every page of the run is uploaded atomically and verified, then the
run's manifest (rebuilt from all of the run's outbox rows, so a run drained in two goes still has one
complete manifest), and only then are the run's rows marked backed up -- in one commit per run. A
failure leaves the failing run's rows pending (the next drain redoes that run from scratch; uploads
overwrite atomically, so that is safe) and keeps the runs already committed.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from paramiko import SFTPClient

from erp_sync.backup import manifest as manifest_mod
from erp_sync.backup.errors import DrainBusy, OutboxCorruptError, RemoteVerificationError
from erp_sync.backup.layout import manifest_path, parent, raw_page_path, report_path
from erp_sync.backup.remote import (
    RemoteFile,
    describe_target,
    put_verified,
    remote_sha256,
    sftp_errors,
    sweep_stale_uploads,
)
from erp_sync.store import outbox

log = logging.getLogger(__name__)

# pg advisory lock key for "erp_sync backup drain" (arbitrary constant, distinct from the others).
DRAIN_LOCK_KEY = 0x4552_5053_4241_4B01


@dataclass
class DrainResult:
    runs: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    records: int = 0
    rows_marked: int = 0
    manifests: list[str] = field(default_factory=list)
    stale_uploads_removed: int = 0  # `.tmp-` files earlier, interrupted uploads left behind

    def as_dict(self) -> dict[str, Any]:
        """Small and JSON-safe, for XCom and the task log."""
        return {
            "runs": len(self.runs),
            "run_ids": self.runs[:20],
            "files": self.files,
            "bytes": self.bytes,
            "records": self.records,
            "rows_marked": self.rows_marked,
            "manifests": self.manifests[:20],
            "stale_uploads_removed": self.stale_uploads_removed,
        }


def _checked_page(row: outbox.OutboxRow, gz: bytes) -> int:
    """Prove the stored gzip still decodes to the page whose SHA-256 the loader recorded; its size."""
    try:
        raw = gzip.decompress(gz)
    except (OSError, EOFError) as exc:
        raise OutboxCorruptError(
            f"outbox row {row.outbox_id} (run {row.run_id}): gzip unreadable: {exc}"
        ) from exc
    digest = hashlib.sha256(raw).hexdigest()
    if digest != row.sha256:
        raise OutboxCorruptError(
            f"outbox row {row.outbox_id} (run {row.run_id}, batch {row.batch_id} page {row.page_no}): "
            f"content hashes to {digest}, recorded {row.sha256}; not backing up a damaged page"
        )
    return len(raw)


def backup_run(
    sftp: SFTPClient,
    conn: Any,
    run_id: str,
    now: datetime,
    known_dirs: set[str] | None = None,
    swept_dirs: set[str] | None = None,
) -> DrainResult:
    """Upload and verify every page and the manifest of one run, then mark its pending rows and commit.

    Each directory it writes to is first swept of stale temporary files (`sweep_stale_uploads`,
    once per directory in `swept_dirs`): a run redone after an interrupted upload is where they are.
    """
    dirs = known_dirs if known_dirs is not None else set()
    swept = swept_dirs if swept_dirs is not None else set()
    rows = outbox.rows_for_run(conn, run_id)
    result = DrainResult(runs=[run_id])
    entries: list[manifest_mod.FileEntry] = []
    marks: list[outbox.BackupMark] = []
    for row in rows:
        gz = None if row.pruned else outbox.read_content(conn, row.outbox_id)
        if gz is None:  # pruned after an earlier backup: the copy on the server is the page now
            entries.append(_pruned_entry(sftp, row))
            continue
        raw_size = _checked_page(row, gz)
        path = raw_page_path(row.source_system, row.stream, row.created_at, run_id, row.batch_id, row.page_no)
        result.stale_uploads_removed += _sweep_once(sftp, parent(path), swept)
        remote = put_verified(sftp, path, gz, dirs)
        entries.append(manifest_mod.file_entry(row, path, len(gz), remote.sha256, raw_size))
        if row.pending:
            marks.append(outbox.BackupMark(row.outbox_id, path, remote.sha256, remote.size, raw_size))
        result.files += 1
        result.bytes += remote.size
        result.records += row.record_count
    batches = outbox.batches_for(conn, sorted({r.batch_id for r in rows}))
    document = manifest_mod.build_manifest(run_id, rows, entries, batches, written_at=now)
    result.stale_uploads_removed += _sweep_once(sftp, parent(manifest_path(run_id)), swept)
    put_verified(sftp, manifest_path(run_id), manifest_mod.dumps(document), dirs)
    result.manifests.append(manifest_path(run_id))
    result.rows_marked = outbox.mark_backed_up(conn, marks)
    conn.commit()
    return result


def drain_outbox(
    sftp: SFTPClient,
    conn: Any,
    *,
    max_runs: int | None = None,
    now: Callable[[], datetime] | None = None,
) -> DrainResult:
    """Back up every run that has pending pages (oldest first); returns what was proven and marked.

    Raises `BackupTargetUnavailable` (naming host:port) when the server fails, `RemoteVerificationError`
    when a read-back does not match; in both cases the failing run stays pending. `DrainBusy` when
    another drain holds the database's drain lock (nothing done; the task's retry drains later).
    """
    clock = now or (lambda: datetime.now(UTC))
    total = DrainResult()
    known_dirs: set[str] = set()
    describe_target(sftp)  # remember host:port while the link is up, for error messages later
    with _drain_lock(conn):
        _drain(sftp, conn, total, known_dirs, set(), clock, max_runs)
    return total


def _pruned_entry(sftp: SFTPClient, row: outbox.OutboxRow) -> manifest_mod.FileEntry:
    """The manifest entry of a page whose outbox content was pruned, after proving that its backup
    still reads back as it did (a run re-opened after retention deleted its files fails here)."""
    if (
        row.remote_path is None
        or row.backup_sha256 is None
        or row.backup_size is None
        or row.raw_size is None
    ):
        raise OutboxCorruptError(
            f"outbox row {row.outbox_id} (run {row.run_id}) was pruned without its backup record"
        )
    with sftp_errors(sftp, f"verification of {row.remote_path}"):
        try:
            digest, size = remote_sha256(sftp, row.remote_path)
        except FileNotFoundError:
            digest, size = "absent", 0
    if (digest, size) != (row.backup_sha256, row.backup_size):
        raise RemoteVerificationError(
            f"SFTP {describe_target(sftp)}: {row.remote_path} (run {row.run_id}, batch {row.batch_id} page "
            f"{row.page_no}) reads back as sha256 {digest} ({size} bytes), backed up as {row.backup_sha256} "
            f"({row.backup_size} bytes); its outbox copy was pruned, so the run's manifest cannot be rebuilt"
        )
    return manifest_mod.file_entry(row, row.remote_path, row.backup_size, row.backup_sha256, row.raw_size)


def _sweep_once(sftp: SFTPClient, directory: str, swept: set[str]) -> int:
    if directory in swept:
        return 0
    swept.add(directory)
    return sweep_stale_uploads(sftp, directory)


@contextmanager
def _drain_lock(conn: Any) -> Iterator[None]:
    """One drain per database at a time (a session advisory lock, held across the per-run commits)."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (DRAIN_LOCK_KEY,))
        acquired = bool(cur.fetchone()[0])
    conn.commit()
    if not acquired:
        raise DrainBusy("another backup drain is running on this database; this one will retry later")
    try:
        yield
    finally:
        if not conn.closed:
            conn.rollback()
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (DRAIN_LOCK_KEY,))
            conn.commit()


def _drain(
    sftp: SFTPClient,
    conn: Any,
    total: DrainResult,
    known_dirs: set[str],
    swept_dirs: set[str],
    clock: Callable[[], datetime],
    max_runs: int | None,
) -> None:
    try:
        run_ids = outbox.pending_run_ids(conn, limit=max_runs)
        conn.rollback()  # do not hold a snapshot open across uploads
        for run_id in run_ids:
            done = backup_run(sftp, conn, run_id, clock(), known_dirs, swept_dirs)
            log.info(
                "backed up run %s: %d files, %d bytes, %d records, %d rows marked",
                run_id,
                done.files,
                done.bytes,
                done.records,
                done.rows_marked,
            )
            total.runs.append(run_id)
            total.files += done.files
            total.bytes += done.bytes
            total.records += done.records
            total.rows_marked += done.rows_marked
            total.manifests.extend(done.manifests)
            total.stale_uploads_removed += done.stale_uploads_removed
    except BaseException:
        conn.rollback()
        raise


def backup_report(sftp: SFTPClient, name: str, data: bytes, *, now: datetime | None = None) -> RemoteFile:
    """Upload a drift report (JSON/CSV/HTML bytes) to `reports/{YYYY}/{MM}/{name}`, atomically and verified.

    Returns the remote path, size and SHA-256 to store with the report (`drift_reports.backup_path`).
    """
    when = now or datetime.now(UTC)
    return put_verified(sftp, report_path(name, when), data)
