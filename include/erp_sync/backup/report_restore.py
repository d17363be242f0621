"""Restore drift reports from their backed-up files into `erp_sync.drift_reports` (ADR 0025).

Called by `backup.restore.restore` with the same selection as the pages:
1. `select_reports`: the reports' sidecar manifests (`backup.report_manifest`) under
   `reports/{YYYY}/{MM}/`: with a date range, the reports written on those days (`created_at`, UTC),
   as the pages restored are those loaded on those days; with a `run_id`, the reports that run wrote.
   A report JSON without a sidecar (backed up before ADR 0025) is counted, named in a warning and
   left on the server: nothing recorded at its upload proves the file intact.
2. `prepare_reports`, before the restore writes anything: every file of every selected report is
   downloaded and held to its sidecar's size and SHA-256, the JSON decoded and checked whole
   (`backup.report_document`) and against its sidecar, and each report looked up in the database:
   already there (the same id, period, version, creation time and content hash) it is counted and left;
   its id or its version of the period held by another report stops the restore
   (`ReportRestoreConflict`).
3. `write_reports`, after the pages: each report in one transaction, with its own report_id,
   version and creation time, totals and items, and `backup_path` (its JSON's remote path), under a
   table lock; checked again under that lock, so a retry, or a report written meanwhile, writes
   nothing twice.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from paramiko import SFTPClient

from erp_sync.backup.errors import ReportRestoreConflict, RestoreIntegrityError
from erp_sync.backup.layout import REPORT_ROOT
from erp_sync.backup.remote import download, exists, listdir, read_back
from erp_sync.backup.report_document import (
    ReportDocumentError,
    ReportRows,
    check_matches_manifest,
    decode_report,
)
from erp_sync.backup.report_manifest import (
    ReportManifest,
    ReportManifestError,
    is_manifest_name,
    loads,
)
from erp_sync.store import drift

log = logging.getLogger(__name__)

_YEAR = re.compile(r"^\d{4}$")
_MONTH = re.compile(r"^(0[1-9]|1[0-2])$")
REFUSED = "restore refused, nothing written"


def parse_restore_reports(value: Any) -> bool:
    """The `restore_reports` parameter: true (default when not given) or false, nothing else."""
    if value is None:
        return True
    if not isinstance(value, bool):
        raise ValueError(f"restore_reports must be true or false, got {value!r}")
    return value


@dataclass(frozen=True)
class ReportSelection:
    """Which reports a restore brings back: those one run wrote, or those written in a date range."""

    run_id: str | None = None
    date_from: date | None = None
    date_to: date | None = None

    def matches(self, manifest: ReportManifest) -> bool:
        if self.run_id is not None:
            return manifest.run_id == self.run_id
        day = manifest.written_on()
        return (self.date_from is None or day >= self.date_from) and (
            self.date_to is None or day <= self.date_to
        )

    def may_hold(self, year: int, month: int) -> bool:
        """Whether `reports/{year}/{month}` can hold a selected report. A report is uploaded right after
        it is written, so its directory is the month it was written in, or the next one when the upload
        crossed midnight at the end of the month."""
        if self.run_id is not None:
            return True
        uploaded = (year, month)
        earliest = (self.date_from.year, self.date_from.month) if self.date_from else None
        latest = _next_month(self.date_to.year, self.date_to.month) if self.date_to else None
        return (earliest is None or uploaded >= earliest) and (latest is None or uploaded <= latest)


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


@dataclass
class ReportRestoreResult:
    enabled: bool = True
    selected: int = 0
    files_verified: int = 0
    restored: list[int] = field(default_factory=list)
    already_present: list[int] = field(default_factory=list)
    without_manifest: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Small and JSON-safe, for XCom."""
        return {
            "enabled": self.enabled,
            "selected": self.selected,
            "files_verified": self.files_verified,
            "restored": len(self.restored),
            "already_present": len(self.already_present),
            "restored_report_ids": self.restored[:50],
            "without_manifest": len(self.without_manifest),
            "without_manifest_files": self.without_manifest[:20],
        }


@dataclass(frozen=True)
class VerifiedReport:
    manifest: ReportManifest
    local_json: Path  # the JSON as downloaded and proven to be the file uploaded, in the restore's own dir

    def rows(self) -> ReportRows:
        return _decoded(self.manifest, self.local_json)


@dataclass
class ReportRestorePlan:
    """What `prepare_reports` proved: the reports to write, and the result so far."""

    to_write: list[VerifiedReport] = field(default_factory=list)
    result: ReportRestoreResult = field(default_factory=ReportRestoreResult)


# -- 1. select -------------------------------------------------------------------------------------


def _month_dirs(sftp: SFTPClient, selection: ReportSelection) -> Iterator[str]:
    for year in sorted(listdir(sftp, REPORT_ROOT)):
        if not _YEAR.match(year):
            continue
        for month in sorted(listdir(sftp, f"{REPORT_ROOT}/{year}")):
            if _MONTH.match(month) and selection.may_hold(int(year), int(month)):
                yield f"{REPORT_ROOT}/{year}/{month}"


def _read_manifest(sftp: SFTPClient, path: str) -> ReportManifest:
    try:
        return loads(read_back(sftp, path)[0], path)
    except ReportManifestError as exc:
        raise RestoreIntegrityError(f"{exc}; {REFUSED}") from exc


def select_reports(
    sftp: SFTPClient, selection: ReportSelection, result: ReportRestoreResult
) -> list[ReportManifest]:
    """The sidecars of the selected reports, oldest first; files without one go to `result`."""
    selected: list[ReportManifest] = []
    json_files: list[str] = []
    covered: set[str] = set()
    for directory in _month_dirs(sftp, selection):
        for name in listdir(sftp, directory):
            if is_manifest_name(name):
                manifest = _read_manifest(sftp, f"{directory}/{name}")
                covered.add(manifest.files["json"].path)
                if selection.matches(manifest):
                    selected.append(manifest)
            elif name.endswith(".json") and not name.startswith("."):
                json_files.append(f"{directory}/{name}")
    result.without_manifest.extend(path for path in json_files if path not in covered)
    _refuse_duplicates(selected)
    result.selected = len(selected)
    if result.without_manifest:
        log.warning(
            "restore: %d drift report files have no sidecar manifest (backed up before ADR 0025) and are "
            "not restored: %s",
            len(result.without_manifest),
            ", ".join(result.without_manifest[:20]),
        )
    return sorted(selected, key=lambda m: (m.created_at, m.report_id))


def _refuse_duplicates(manifests: Sequence[ReportManifest]) -> None:
    """Two backups claiming one report id, or one version of one period, cannot both be restored."""
    seen: dict[Any, ReportManifest] = {}
    for manifest in manifests:
        for key in (
            ("report", manifest.report_id),
            ("version", manifest.period_start, manifest.period_end, manifest.streams, manifest.version),
        ):
            other = seen.setdefault(key, manifest)
            if other is not manifest:
                raise RestoreIntegrityError(
                    f"{manifest.where} and {other.where} both back up report {manifest.report_id} "
                    f"v{manifest.version} of {manifest.period_start.isoformat()}.."
                    f"{manifest.period_end.isoformat()}; {REFUSED}"
                )


# -- 2. verify, decode and check against the database, before any write -----------------------------


def _download_checked(sftp: SFTPClient, manifest: ReportManifest, kind: str, target: Path) -> None:
    listed = manifest.files[kind]
    if not exists(sftp, listed.path):
        raise RestoreIntegrityError(f"{listed.path}: listed in {manifest.where} but missing; {REFUSED}")
    size, sha256 = download(sftp, listed.path, target)
    if (size, sha256) != (listed.size, listed.sha256):
        raise RestoreIntegrityError(
            f"{listed.path}: sha256 {sha256} ({size} bytes) does not match its manifest "
            f"{manifest.where} ({listed.sha256}, {listed.size} bytes); {REFUSED}"
        )


def _decoded(manifest: ReportManifest, local_json: Path) -> ReportRows:
    where = manifest.files["json"].path
    try:
        rows = decode_report(local_json.read_bytes(), where)
        check_matches_manifest(rows, manifest)
    except ReportDocumentError as exc:
        raise RestoreIntegrityError(f"{exc}; {REFUSED}") from exc
    return rows


def verify_report(sftp: SFTPClient, manifest: ReportManifest, workdir: Path) -> VerifiedReport:
    """Every file of the report proven against its sidecar, the JSON decoded and checked whole."""
    local_json = workdir / f"{manifest.report_id}-{manifest.version}.json"
    for kind in manifest.files:
        target = local_json if kind == "json" else workdir / f"{manifest.report_id}-{manifest.version}.{kind}"
        _download_checked(sftp, manifest, kind, target)
        if kind != "json":
            target.unlink()  # proven intact; only the JSON's rows are restored
    verified = VerifiedReport(manifest, local_json)
    verified.rows()
    return verified


def is_present(conn: Any, manifest: ReportManifest) -> bool:
    """True when the database holds this very report; `ReportRestoreConflict` when its id or its
    version of the period is another report's."""
    found = drift.reports_sharing_identity(
        conn,
        manifest.report_id,
        manifest.period_start,
        manifest.period_end,
        manifest.streams,
        manifest.version,
    )
    if not found:
        return False
    wanted = {
        "report_id": manifest.report_id,
        "period_start": manifest.period_start,
        "period_end": manifest.period_end,
        "streams": list(manifest.streams),
        "version": manifest.version,
        "created_at": manifest.created_at,
        "dag_id": manifest.dag_id,
        "run_id": manifest.run_id,
        "content_sha256": manifest.content_sha256,
    }
    if found == [wanted]:
        return True
    other = next(row for row in found if row != wanted)
    raise ReportRestoreConflict(
        f"{manifest.files['json'].path}: report {manifest.report_id} v{manifest.version} of "
        f"{manifest.period_start.isoformat()}..{manifest.period_end.isoformat()} {list(manifest.streams)} "
        f"(written {manifest.created_at.isoformat()}) cannot be restored: this database's report "
        f"{other['report_id']} v{other['version']} (written {other['created_at'].isoformat()}) holds its "
        "id or its version of the period. Restore reports into a database before it writes its own, "
        f"or restore with restore_reports=false; {REFUSED}"
    )


def prepare_reports(
    sftp: SFTPClient,
    conn: Any,
    manifests: Sequence[ReportManifest],
    workdir: Path,
    result: ReportRestoreResult,
) -> ReportRestorePlan:
    """Prove, decode and look up every selected report; raises before any write on the first that
    is damaged, inconsistent or in conflict."""
    workdir.mkdir(parents=True, exist_ok=True)
    plan = ReportRestorePlan(result=result)
    try:
        for manifest in manifests:
            verified = verify_report(sftp, manifest, workdir)
            result.files_verified += len(manifest.files)
            if is_present(conn, manifest):
                result.already_present.append(manifest.report_id)
            else:
                plan.to_write.append(verified)
    finally:
        conn.rollback()  # end the lookups' transaction: no snapshot held across the restore
    return plan


# -- 3. write --------------------------------------------------------------------------------------


def write_reports(conn: Any, plan: ReportRestorePlan) -> ReportRestoreResult:
    """Insert each proven report in its own transaction; one found present meanwhile is counted."""
    result = plan.result
    for verified in plan.to_write:
        manifest = verified.manifest
        rows = verified.rows()
        try:
            drift.lock_reports_for_restore(conn)
            if is_present(conn, manifest):
                conn.rollback()
                result.already_present.append(manifest.report_id)
                continue
            drift.insert_restored_report(conn, rows.header, rows.totals, rows.items, manifest.backup_path)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        result.restored.append(manifest.report_id)
        log.info(
            "restore: drift report %s v%s (%s items) restored from %s",
            manifest.report_id,
            manifest.version,
            manifest.item_count,
            manifest.backup_path,
        )
    return result
