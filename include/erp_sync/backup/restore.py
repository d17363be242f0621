"""Restore ERP staging from the SFTP backups, through the same dedupe and load path as a sync.

1. Select manifests: one run (`run_id`) or every run whose pages fall in `[date_from, date_to]`.
2. Download every file they name and check its size and SHA-256 (of the gzip and of the page inside)
   against the manifest -- all of them BEFORE anything is written. One mismatch stops the restore
   with `RestoreIntegrityError` naming the file.
3. Per original batch (in batch order): rebuild each `Page` from its body with
   `clients.pages.page_from_body` (the client's own record selection), `map_pages`, and
   `load_batch` with the original batch's window and input hash. A batch the database already
   holds is recognised as committed and writes nothing; into an emptied database the batch loads
   again, and the stream cursor moves forward only (never backwards) with the original
   window-closing batch.
   A repair's tombstone batch (ADR 0020) has one document instead of pages (mode `repair_tombstones`,
   `core.tombstone_document`, decoded and checked with the files, before any write): its gone records
   are staged again by `store.tombstones.stage_tombstones`, with the original version and evidence,
   under a key tied to this restore; a database that holds them as tombstones already writes nothing
   (ADR 0022). Its records not staged yet (their runs are restored later, or in a later restore) wait,
   and the restore's last step stages every waiting tombstone whose record is staged by then, by the
   same rules: the end state does not depend on the order runs are restored in (ADR 0026).
4. Drift reports (`backup.report_restore`, ADR 0025), unless `restore_reports` is false: those written
   in the date range (or by the run), each proven against its sidecar manifest and decoded whole with
   the files in step 2, before any write, and written after the pages with their own ids and versions;
   a report the database holds already is counted and left.

Before loading a stream the Redis ledger is rebuilt from Postgres: after staging was emptied the
ledger would otherwise still claim every row is loaded and skip them all.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paramiko import SFTPClient

from erp_sync.backup import manifest as manifest_mod
from erp_sync.backup import report_restore
from erp_sync.backup.errors import ManifestError, RestoreIntegrityError
from erp_sync.backup.layout import MANIFEST_ROOT, manifest_path, run_id_from_manifest_name
from erp_sync.backup.remote import describe_target, download, exists, listdir, read_back, sftp_errors
from erp_sync.backup.report_manifest import ReportManifest
from erp_sync.core.batch import BatchKey, BatchResult, Page
from erp_sync.core.tombstone_document import (
    TOMBSTONE_MODE,
    TombstoneDocument,
    TombstoneDocumentError,
    decode_document,
)
from erp_sync.store import outbox
from erp_sync.streams.spec import StreamSpec

if TYPE_CHECKING:
    from erp_sync.store.deferred_tombstones import RestoredDocument

log = logging.getLogger(__name__)

NOT_RESTORABLE_MODES = frozenset({"replay"})  # replay pages hold rejection ids, not SaaS bodies


@dataclass(frozen=True)
class RestoreSelection:
    """Validated restore parameters: exactly one run, or a date range (either end may be open)."""

    run_id: str | None = None
    date_from: date | None = None
    date_to: date | None = None

    def matches(self, document: Mapping[str, Any]) -> bool:
        if self.run_id is not None:
            return bool(document.get("run_id") == self.run_id)
        first = manifest_mod.parse_time(document.get("first_page_at"))
        last = manifest_mod.parse_time(document.get("last_page_at"))
        if first is None or last is None:
            return False
        return (self.date_from is None or last.date() >= self.date_from) and (
            self.date_to is None or first.date() <= self.date_to
        )


def _as_date(name: str, value: date | str | None) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        raise ValueError(f"{name} must be a date (YYYY-MM-DD), not a datetime")
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{name} must be a date as YYYY-MM-DD, got {value!r}") from None


def validate_restore_params(
    run_id: str | None = None, date_from: date | str | None = None, date_to: date | str | None = None
) -> RestoreSelection:
    """Check what to restore before anything is read or written; `ValueError` says what is wrong."""
    run = (run_id or "").strip() or None
    start, end = _as_date("date_from", date_from), _as_date("date_to", date_to)
    if run is not None and (start is not None or end is not None):
        raise ValueError("give either run_id or date_from/date_to, not both")
    if run is None and start is None and end is None:
        raise ValueError("give a run_id or a date range (date_from and/or date_to) to restore")
    if start is not None and end is not None and start > end:
        raise ValueError(f"date_from {start} is after date_to {end}")
    return RestoreSelection(run, start, end)


@dataclass
class RestoreResult:
    runs: list[str] = field(default_factory=list)
    files_verified: int = 0
    batches: int = 0
    batches_already_present: int = 0  # nothing written: in staging, or committed by an earlier try
    pages: int = 0
    skipped_pages: int = 0
    extracted: int = 0
    loaded_new: int = 0
    loaded_changed: int = 0
    skipped_unchanged: int = 0
    rejected: int = 0
    tombstoned: int = 0  # records a repair's tombstone batch staged as deleted again
    tombstoned_after_waiting: int = 0  # of those, records whose tombstone waited for them (ADR 0026)
    tombstones_waiting: int = 0  # after the restore: records whose tombstone waits for them to be staged
    rows_by_table: dict[str, int] = field(default_factory=dict)
    reports: report_restore.ReportRestoreResult = field(default_factory=report_restore.ReportRestoreResult)

    def add(self, batch: BatchResult) -> None:
        self.batches += 1
        self.extracted += batch.extracted
        self.loaded_new += batch.loaded_new
        self.loaded_changed += batch.loaded_changed
        self.skipped_unchanged += batch.skipped_unchanged
        self.rejected += batch.rejected
        for table, rows in batch.rows_by_table.items():
            self.rows_by_table[table] = self.rows_by_table.get(table, 0) + rows

    @property
    def rows_written(self) -> int:
        return sum(self.rows_by_table.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs[:50],
            "run_count": len(self.runs),
            "files_verified": self.files_verified,
            "batches": self.batches,
            "batches_already_present": self.batches_already_present,
            "pages": self.pages,
            "skipped_pages": self.skipped_pages,
            "extracted": self.extracted,
            "new": self.loaded_new,
            "changed": self.loaded_changed,
            "unchanged": self.skipped_unchanged,
            "rejected": self.rejected,
            "tombstoned": self.tombstoned,
            "tombstoned_after_waiting": self.tombstoned_after_waiting,
            "tombstones_waiting": self.tombstones_waiting,
            "rows_by_table": self.rows_by_table,
            "rows_written": self.rows_written,
            "reports": self.reports.as_dict(),
        }


@dataclass(frozen=True)
class _VerifiedFile:
    entry: dict[str, Any]
    local: Path  # the verified raw page body

    @property
    def mode(self) -> str:
        return _mode(self.entry)


def _mode(entry: Mapping[str, Any]) -> str:
    return str((entry.get("page_meta") or {}).get("mode", "full"))


# -- 1. manifests ----------------------------------------------------------------------------------


def select_manifests(
    sftp: SFTPClient, selection: RestoreSelection, *, none_ok: bool = False
) -> list[dict[str, Any]]:
    """The manifests to restore, oldest run first; `ManifestError` when none match, unless `none_ok`
    (drift reports were selected: their files outlive the raw pages' retention)."""
    if selection.run_id is not None:
        path = manifest_path(selection.run_id)
        if not exists(sftp, path):
            if none_ok:
                return []
            raise ManifestError(
                f"SFTP {describe_target(sftp)}: no backup of run {selection.run_id!r} ({path})"
            )
        documents = [manifest_mod.loads(read_back(sftp, path)[0], path)]
    else:
        documents = []
        for name in listdir(sftp, MANIFEST_ROOT):
            if run_id_from_manifest_name(name) is None:
                continue
            path = f"{MANIFEST_ROOT}/{name}"
            document = manifest_mod.loads(read_back(sftp, path)[0], path)
            if selection.matches(document):
                documents.append(document)
        if not documents and not none_ok:
            raise ManifestError(
                f"SFTP {describe_target(sftp)}: no backed-up run between {selection.date_from or '-'} "
                f"and {selection.date_to or '-'}"
            )
    return sorted(documents, key=lambda d: (str(d.get("first_page_at")), str(d["run_id"])))


# -- 2. download and verify everything first -------------------------------------------------------


def verify_files(sftp: SFTPClient, documents: list[dict[str, Any]], workdir: Path) -> list[_VerifiedFile]:
    """Download every file the manifests name; raise on the first that does not match."""
    verified: list[_VerifiedFile] = []
    for document in documents:
        for entry in document["files"]:
            path = str(entry["path"])
            gz_local = workdir / f"{len(verified)}.gz"
            if not exists(sftp, path):
                raise RestoreIntegrityError(
                    f"{path}: listed in run {document['run_id']}'s manifest but missing"
                )
            size, digest = download(sftp, path, gz_local)
            if size != entry["size"] or digest != entry["sha256_gz"]:
                raise RestoreIntegrityError(
                    f"{path}: sha256 {digest} ({size} bytes) does not match the manifest's "
                    f"{entry['sha256_gz']} ({entry['size']} bytes); restore refused, nothing written"
                )
            try:
                raw = gzip.decompress(gz_local.read_bytes())
            except (OSError, EOFError) as exc:
                raise RestoreIntegrityError(f"{path}: not a readable gzip ({exc}); nothing written") from exc
            if hashlib.sha256(raw).hexdigest() != entry["sha256_raw"]:
                raise RestoreIntegrityError(f"{path}: page inside does not match sha256_raw; nothing written")
            raw_local = workdir / f"{len(verified)}.json"
            raw_local.write_bytes(raw)
            gz_local.unlink()
            verified.append(_VerifiedFile(entry, raw_local))
    return verified


# -- 3. load ---------------------------------------------------------------------------------------


def _spec_for(specs: Mapping[str, StreamSpec] | None, source_system: str, stream: str) -> StreamSpec:
    if specs is None:
        from erp_sync.streams import STREAMS

        specs = STREAMS
    spec = specs.get(stream)
    if spec is None or spec.source_system != source_system:
        raise ManifestError(f"backup holds stream {source_system}/{stream}, which no stream spec declares")
    return spec


def _check_streams_known(specs: Mapping[str, StreamSpec] | None, files: list[_VerifiedFile]) -> None:
    for item in files:
        if item.mode not in NOT_RESTORABLE_MODES:
            _spec_for(specs, str(item.entry["source_system"]), str(item.entry["stream"]))


def read_tombstone_documents(
    specs: Mapping[str, StreamSpec] | None, files: list[_VerifiedFile]
) -> dict[str, TombstoneDocument]:
    """Decode every verified tombstone document (by its remote path), checked against its manifest entry
    and its stream's spec; `RestoreIntegrityError` naming the file on the first that does not hold."""
    documents: dict[str, TombstoneDocument] = {}
    per_batch: dict[tuple[str, int], int] = {}
    for item in files:
        if item.mode != TOMBSTONE_MODE:
            continue
        path = str(item.entry["path"])
        try:
            document = decode_document(item.local.read_bytes(), path)
        except TombstoneDocumentError as exc:
            raise RestoreIntegrityError(f"{exc}; restore refused, nothing written") from exc
        _check_document_matches(
            document, item.entry, _spec_for(specs, document.source_system, document.stream)
        )
        batch = (str(item.entry["source_system"]), int(item.entry["batch_id"]))
        per_batch[batch] = per_batch.get(batch, 0) + 1
        if per_batch[batch] > 1:
            raise RestoreIntegrityError(
                f"{path}: batch {batch[1]} lists more than one tombstone document;"
                " restore refused, nothing written"
            )
        documents[path] = document
    return documents


def _check_document_matches(document: TombstoneDocument, entry: Mapping[str, Any], spec: StreamSpec) -> None:
    """The document must be the batch its manifest entry names, over the tables its stream stages."""
    path = entry["path"]
    found = (document.source_system, document.stream, document.record_count)
    listed = (entry["source_system"], entry["stream"], entry.get("record_count"))
    if found != listed:
        raise RestoreIntegrityError(
            f"{path}: holds {found[2]} gone records of {found[0]}/{found[1]}, its manifest entry lists "
            f"{listed[2]} of {listed[0]}/{listed[1]}; restore refused, nothing written"
        )
    tables = (document.primary_table, *document.child_tables)
    if document.primary_table != spec.target_tables[0] or not set(tables) <= set(spec.target_tables):
        raise RestoreIntegrityError(
            f"{path}: tombstones rows of {list(tables)}, but stream {spec.name} stages"
            f" {list(spec.target_tables)}; restore refused, nothing written"
        )


def _batch_windows(document: Mapping[str, Any]) -> dict[int, Mapping[str, Any]]:
    return {int(b["batch_id"]): b for b in document.get("batches", [])}


def restore_key(
    restore_run_id: str, spec: StreamSpec, batch: Mapping[str, Any], pages: list[Page]
) -> BatchKey:
    """The key a restored batch is loaded under: the original window, and an input hash tied to this
    restore, so an earlier record of the original batch (or of an earlier restore) cannot make the
    loader skip a batch whose rows are missing from staging."""
    from erp_sync.pipeline import input_sha256

    return _restore_batch_key(restore_run_id, spec.source_system, spec.name, batch, input_sha256(pages))


def _restore_batch_key(
    restore_run_id: str, source_system: str, stream: str, batch: Mapping[str, Any], input_digest: str
) -> BatchKey:
    tagged = hashlib.sha256(f"{restore_run_id}|{input_digest}".encode()).hexdigest()
    return BatchKey(
        restore_run_id,
        source_system,
        stream,
        manifest_mod.parse_time(batch.get("window_start")),
        manifest_mod.parse_time(batch.get("window_end")),
        tagged,
    )


def _restore_batch(
    conn: Any,
    ledger: Any,
    spec: StreamSpec,
    restore_run_id: str,
    files: list[_VerifiedFile],
    batch: Mapping[str, Any],
    next_batch_id: Callable[[], int],
    seen: set[str] | None = None,
) -> BatchResult | None:
    """Load one original batch again; None when that writes nothing: staging already holds all of
    it, or an earlier try of this restore committed it (its outbox rows are then pointed at the
    backup, in case that try died before it did).

    `seen`: for a newest-first event listing, the keys the window's earlier pages carried; older
    snapshots are dropped as superseded as the client dropped them (and `seen` grows).
    """
    from erp_sync.clients.pages import page_from_body
    from erp_sync.core.transform import map_pages
    from erp_sync.store.loader import load_batch, plan_batch

    ordered = sorted(files, key=lambda f: int(f.entry["page_no"]))
    pages: list[Page] = [
        page_from_body(
            spec,
            f.local.read_bytes(),
            str(f.entry["url"]),
            f.entry["page_meta"],
            int(f.entry["page_no"]),
            seen,
        )
        for f in ordered
    ]
    mapped = map_pages(spec, pages)
    key = restore_key(restore_run_id, spec, batch, pages)
    planned = plan_batch(conn, ledger, key, mapped, pages)
    if planned.already_committed:
        _point_outbox_at_backup(conn, planned.batch_id, ordered)
        return None
    if planned.loaded_new == 0 and planned.loaded_changed == 0:
        return None
    result: BatchResult = load_batch(
        conn,
        ledger,
        key,
        mapped,
        pages,
        batch_id=next_batch_id(),
        cursor_after=manifest_mod.parse_time(batch.get("cursor_after")),
        page_meta=dict(ordered[0].entry.get("page_meta") or {}),
    )
    result.check_conservation()
    _point_outbox_at_backup(conn, result.batch_id, ordered)
    return None if result.already_committed else result  # a try running at once committed it first


def _restore_tombstones(
    ctx: _RestoreContext, item: _VerifiedFile, batch: Mapping[str, Any]
) -> BatchResult | None:
    """Stage a repair's tombstone batch again; None when that writes nothing (no gone record is live
    and older here, or a retry of this restore finds its batch committed).

    The same rules as the repair's own batch (`stage_tombstones`): only live rows no newer than the
    document's version become tombstones, their lines are retired, their ledger entries evicted and
    each record's evidence recorded. The key is tied to this restore, as a page batch's is: the
    original batch's record, kept in a database whose staging was emptied, must not make it skip.
    Records not staged yet wait for the restore's last step (ADR 0026).
    """
    from erp_sync.store.deferred_tombstones import RestoredDeferrals
    from erp_sync.store.tombstones import TombstoneRequest, stage_tombstones

    document = ctx.tombstone_documents[str(item.entry["path"])]
    key = _restore_batch_key(
        ctx.restore_run_id, document.source_system, document.stream, batch, document.input_sha256
    )
    deferrals = RestoredDeferrals(_restored_document(document, item, batch), ctx.restore_run_id)
    staged = stage_tombstones(
        ctx.conn, ctx.ledger, TombstoneRequest.from_document(key, document),
        batch_id=ctx.next_batch_id(), lock_timeout_s=ctx.lock_timeout_s, deferrals=deferrals,
    )  # fmt: skip
    waiting = sum(1 for outcome in staged.outcomes.values() if outcome == "not_staged")
    if waiting:
        ctx.documents_waiting.add(str(item.entry["path"]))
        log.info("restore: %d records of %s wait for the runs that stage them", waiting, item.entry["path"])
    if staged.result is None or staged.result.already_committed:
        return None
    _point_outbox_at_backup(ctx.conn, staged.result.batch_id, [item])
    return staged.result


def _restored_document(
    document: TombstoneDocument, item: _VerifiedFile, batch: Mapping[str, Any]
) -> RestoredDocument:
    from erp_sync.store.deferred_tombstones import BackedUpFile, RestoredDocument

    entry = item.entry
    return RestoredDocument(
        document,
        manifest_mod.parse_time(batch.get("window_start")),
        manifest_mod.parse_time(batch.get("window_end")),
        BackedUpFile(str(entry["path"]), str(entry["sha256_gz"]), str(entry["sha256_raw"])),
    )


def _stage_waiting_tombstones(ctx: _RestoreContext, out: RestoreResult) -> None:
    """The restore's last step: the tombstones that waited for their records, staged now that the
    records are (ADR 0026)."""
    from erp_sync.store.deferred_tombstones import stage_waiting, waiting_count

    for done in stage_waiting(
        ctx.conn, ctx.ledger, run_id=ctx.restore_run_id, next_batch_id=ctx.next_batch_id,
        lock_timeout_s=ctx.lock_timeout_s,
    ):  # fmt: skip
        batch = done.staged.result
        if batch is None or batch.already_committed:
            continue
        backup = done.document_written_from
        if backup is not None:
            outbox.mark_restored(
                ctx.conn, batch.batch_id, [(1, backup.path, backup.sha256_gz, backup.sha256_raw)]
            )
            ctx.conn.commit()
        out.add(batch)
        out.tombstoned += batch.loaded_changed
        out.tombstoned_after_waiting += batch.loaded_changed
        log.info("restore: batch %s tombstoned %d records that waited", batch.batch_id, batch.loaded_changed)
    out.tombstones_waiting = waiting_count(ctx.conn)
    if out.tombstones_waiting:
        log.warning(
            "restore: %d tombstones wait for their records: restore the runs that staged them",
            out.tombstones_waiting,
        )


def _point_outbox_at_backup(conn: Any, batch_id: int, files: list[_VerifiedFile]) -> None:
    """The restored batch's outbox rows are the very files the restore just verified on the server:
    point them there instead of uploading them again."""
    outbox.mark_restored(
        conn,
        batch_id,
        [
            (
                int(f.entry["page_no"]),
                str(f.entry["path"]),
                str(f.entry["sha256_gz"]),
                str(f.entry["sha256_raw"]),
            )
            for f in files
        ],
    )
    conn.commit()


def _default_batch_ids(ledger: Any, conn: Any) -> Callable[[], int]:
    from erp_sync.store.counters import next_batch_id

    return lambda: next_batch_id(ledger.redis, ledger.namespace, conn)


@dataclass
class _RestoreContext:
    conn: Any
    ledger: Any
    specs: Mapping[str, StreamSpec] | None
    next_batch_id: Callable[[], int]
    restore_run_id: str
    lock_timeout_s: float
    rebuilt: set[tuple[str, str]] = field(default_factory=set)
    tombstone_documents: Mapping[str, TombstoneDocument] = field(default_factory=dict)  # by remote path
    documents_waiting: set[str] = field(default_factory=set)  # with records not staged yet (ADR 0026)


def _restore_run(
    ctx: _RestoreContext, document: Mapping[str, Any], files: list[_VerifiedFile], out: RestoreResult
) -> None:
    """Load one run's verified files, batch by original batch."""
    from erp_sync.clients.pages import uses_events
    from erp_sync.store.locks import stream_lock

    run = str(document["run_id"])
    windows = _batch_windows(document)
    by_batch: dict[int, list[_VerifiedFile]] = {}
    for item in files:
        by_batch.setdefault(int(item.entry["batch_id"]), []).append(item)
    seen_by_window: dict[tuple[str, Any, Any], set[str]] = {}
    for original_batch_id in sorted(by_batch):
        batch_files = by_batch[original_batch_id]
        first = batch_files[0].entry
        mode = batch_files[0].mode
        if mode in NOT_RESTORABLE_MODES:
            out.skipped_pages += len(batch_files)
            log.warning("restore: batch %s of run %s is a %s batch: skipped", original_batch_id, run, mode)
            continue
        spec = _spec_for(ctx.specs, str(first["source_system"]), str(first["stream"]))
        with stream_lock(ctx.conn, spec.source_system, spec.name, timeout_s=ctx.lock_timeout_s):
            if (spec.source_system, spec.name) not in ctx.rebuilt:
                ctx.ledger.rebuild_from_postgres(ctx.conn, spec.target_tables)
                ctx.rebuilt.add((spec.source_system, spec.name))
            window = windows.get(original_batch_id, {})
            if mode == TOMBSTONE_MODE:
                batch = _restore_tombstones(ctx, batch_files[0], window)
            else:
                seen = (
                    seen_by_window.setdefault(
                        (spec.name, window.get("window_start"), window.get("window_end")), set()
                    )
                    if uses_events(spec, mode)
                    else None
                )
                batch = _restore_batch(
                    ctx.conn,
                    ctx.ledger,
                    spec,
                    ctx.restore_run_id,
                    batch_files,
                    window,
                    ctx.next_batch_id,
                    seen,
                )
        out.pages += len(batch_files)
        if batch is None and str(first["path"]) in ctx.documents_waiting:
            continue
        if batch is None:
            out.batches_already_present += 1
            log.info("restore: run %s batch %s is already in staging", run, original_batch_id)
            continue
        out.add(batch)
        if mode == TOMBSTONE_MODE:
            out.tombstoned += batch.loaded_changed
        log.info(
            "restore: run %s batch %s -> batch %s: new %d, changed %d, unchanged %d, rejected %d",
            run,
            original_batch_id,
            batch.batch_id,
            batch.loaded_new,
            batch.loaded_changed,
            batch.skipped_unchanged,
            batch.rejected,
        )


def restore(
    sftp: SFTPClient,
    conn: Any,
    ledger: Any,
    run_id: str | None = None,
    date_from: date | str | None = None,
    date_to: date | str | None = None,
    *,
    specs: Mapping[str, StreamSpec] | None = None,
    next_batch_id: Callable[[], int] | None = None,
    restore_run_id: str | None = None,
    lock_timeout_s: float = 600.0,
    restore_reports: bool = True,
) -> RestoreResult:
    """Restore one run or a date range from the backups into the database behind `conn`.

    `ledger` is the `erp_sync.store.ledger.RedisLedger` the syncs use; batches are recorded under
    `restore_run_id` (default `restore__<time>_<random>`; the DAG passes its own run id).
    Raises `ValueError` for bad parameters, `ManifestError` when nothing matches,
    `RestoreIntegrityError` (before any write) when a file does not match its manifest,
    `ReportRestoreConflict` (before any write) when a drift report's id or version is another
    report's here, and `BackupTargetUnavailable` when the server fails.
    """
    selection = validate_restore_params(run_id, date_from, date_to)
    with_reports = report_restore.parse_restore_reports(restore_reports)
    ctx = _RestoreContext(
        conn=conn,
        ledger=ledger,
        specs=specs,
        next_batch_id=next_batch_id or _default_batch_ids(ledger, conn),
        restore_run_id=restore_run_id or f"restore__{datetime.now(UTC):%Y%m%dT%H%M%S}_{uuid.uuid4().hex[:8]}",
        lock_timeout_s=lock_timeout_s,
    )
    result = RestoreResult()
    describe_target(sftp)
    with tempfile.TemporaryDirectory(prefix="erp-restore-") as tmp:
        with sftp_errors(sftp, "restore download"):
            reports = _select_reports(sftp, selection, result.reports, with_reports)
            documents = select_manifests(sftp, selection, none_ok=bool(reports))
            verified = verify_files(sftp, documents, Path(tmp))
        result.files_verified = len(verified)
        _check_streams_known(specs, verified)  # also before any write
        ctx.tombstone_documents = read_tombstone_documents(specs, verified)
        with sftp_errors(sftp, "restore download of drift reports"):
            report_plan = report_restore.prepare_reports(
                sftp, conn, reports, Path(tmp) / "reports", result.reports
            )
        log.info("restore: %d runs, %d files verified against their manifests", len(documents), len(verified))
        index = 0
        for document in documents:
            count = len(document["files"])
            result.runs.append(str(document["run_id"]))
            _restore_run(ctx, document, verified[index : index + count], result)
            index += count
        _stage_waiting_tombstones(ctx, result)
        report_restore.write_reports(conn, report_plan)
    return result


def _select_reports(
    sftp: SFTPClient, selection: RestoreSelection, out: report_restore.ReportRestoreResult, enabled: bool
) -> list[ReportManifest]:
    out.enabled = enabled
    if not enabled:
        return []
    return report_restore.select_reports(
        sftp, report_restore.ReportSelection(selection.run_id, selection.date_from, selection.date_to), out
    )
