"""Retention: delete backups older than N days, but never the last good copy of anything.

A run's files (raw pages and manifest) are deleted only when all of these hold:
- the run is older than `keep_days` (by its newest page's time in the manifest);
- a newer manifest exists whose every file is on the server and hashes to what it lists (the
  "anchor" -- the newest such manifest, re-verified on every retention pass);
- the outbox has no unverified page of that run (a page waiting for its backup may need the run's
  manifest rewritten; its files are not deleted underneath it).
Files go first and the manifest last, so an interrupted pass leaves a manifest naming what remains
and the next pass finishes the job. Unreadable manifests are never deleted automatically.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from paramiko import SFTPClient

from erp_sync.backup import manifest as manifest_mod
from erp_sync.backup.errors import ManifestError
from erp_sync.backup.layout import MANIFEST_ROOT, parent, run_id_from_manifest_name
from erp_sync.backup.remote import (
    describe_target,
    exists,
    listdir,
    read_back,
    remote_sha256,
    remove,
    sftp_errors,
)
from erp_sync.store.outbox import unverified_run_ids

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredRun:
    run_id: str
    manifest_path: str
    run_time: datetime
    files: list[dict[str, Any]]


@dataclass
class RetentionResult:
    anchor_run_id: str | None = None
    deleted_runs: list[str] = field(default_factory=list)
    deleted_files: int = 0
    kept_unverified: list[str] = field(default_factory=list)
    kept_recent: int = 0
    unreadable_manifests: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "anchor_run_id": self.anchor_run_id,
            "deleted_runs": self.deleted_runs[:50],
            "deleted_run_count": len(self.deleted_runs),
            "deleted_files": self.deleted_files,
            "kept_unverified": self.kept_unverified[:50],
            "kept_recent": self.kept_recent,
            "unreadable_manifests": self.unreadable_manifests[:50],
        }


def stored_runs(sftp: SFTPClient, unreadable: list[str] | None = None) -> list[StoredRun]:
    """Every readable manifest on the server, oldest run first."""
    runs: list[StoredRun] = []
    for name in listdir(sftp, MANIFEST_ROOT):
        if run_id_from_manifest_name(name) is None:
            continue
        path = f"{MANIFEST_ROOT}/{name}"
        try:
            document = manifest_mod.loads(read_back(sftp, path)[0], path)
            run_time = manifest_mod.parse_time(document.get("last_page_at") or document.get("written_at"))
        except (ManifestError, ValueError) as exc:
            log.warning("retention: skipping unreadable manifest %s: %s", path, exc)
            if unreadable is not None:
                unreadable.append(path)
            continue
        if run_time is None:
            if unreadable is not None:
                unreadable.append(path)
            continue
        runs.append(StoredRun(str(document["run_id"]), path, run_time, list(document["files"])))
    return sorted(runs, key=lambda r: (r.run_time, r.run_id))


def run_verifies(sftp: SFTPClient, run: StoredRun) -> bool:
    """True when every file the manifest lists is on the server with its size and SHA-256."""
    for entry in run.files:
        path = str(entry["path"])
        if not exists(sftp, path):
            log.warning("retention: %s lists %s, which is missing", run.manifest_path, path)
            return False
        digest, size = remote_sha256(sftp, path)
        if digest != entry["sha256_gz"] or size != entry["size"]:
            log.warning("retention: %s does not match %s", path, run.manifest_path)
            return False
    return True


def _delete_run(sftp: SFTPClient, run: StoredRun) -> int:
    deleted = 0
    directories: set[str] = set()
    for entry in run.files:
        path = str(entry["path"])
        deleted += int(remove(sftp, path))
        directories.add(parent(path))
    remove(sftp, run.manifest_path)
    for directory in sorted(directories, reverse=True):
        with contextlib.suppress(OSError):  # not empty (another run's files): keep it
            sftp.rmdir(directory)
    return deleted


def apply_retention(
    sftp: SFTPClient, conn: Any, keep_days: int, *, now: datetime | None = None
) -> RetentionResult:
    """Delete runs older than `keep_days` that a newer verified backup supersedes (see module doc)."""
    if keep_days < 1:
        raise ValueError(f"keep_days must be at least 1, not {keep_days}")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=keep_days)
    result = RetentionResult()
    describe_target(sftp)
    with sftp_errors(sftp, "retention"):
        runs = stored_runs(sftp, result.unreadable_manifests)
        anchor = next((run for run in reversed(runs) if run_verifies(sftp, run)), None)
        if anchor is None:
            log.warning("retention: no manifest verifies; deleting nothing")
            return result
        result.anchor_run_id = anchor.run_id
        unverified = unverified_run_ids(conn)
        conn.rollback()
        for run in runs:
            if run.run_time >= cutoff or run.run_time >= anchor.run_time or run is anchor:
                result.kept_recent += 1
                continue
            if run.run_id in unverified:
                result.kept_unverified.append(run.run_id)
                continue
            result.deleted_files += _delete_run(sftp, run)
            result.deleted_runs.append(run.run_id)
            log.info("retention: deleted run %s (%s)", run.run_id, run.run_time.isoformat())
    return result
