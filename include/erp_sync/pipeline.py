"""One stream's sync, end to end: extract -> validate/transform -> dedupe/load, streamed in batches.

Airflow-free: the operator builds the client, the Postgres connection and the Redis client from
Airflow Connections and calls `sync_stream`; the benchmark and the tests call it directly.

Memory stays bounded: pages are buffered only until `batch_records` records are waiting, then
mapped and committed. The stream cursor moves only with the window's last batch (Stripe lists
newest first, so the window is complete only then); see docs/ARCHITECTURE.md "Cursor".
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from erp_sync.core.batch import BatchKey, BatchResult, MappedBatch, Page
from erp_sync.core.batching import READ_AHEAD_PAGES, ReadAhead, collect_between_batches, gc_paused
from erp_sync.streams.spec import StreamSpec

log = logging.getLogger(__name__)

DEFAULT_BATCH_RECORDS = 5_000
# The first batch is a fifth of the others: the load (and the overlap with extraction) starts after
# 1,000 records instead of 5,000, which is most of a small delta's wait. The batches after it double
# (1,000, 2,000, 4,000, 5,000, ...), so the loading thread is not left idle while the second batch
# fills: in a 1% delta at 1,000,000 it waited 0.24-0.39 s for a 5,000-record second batch.
FIRST_BATCH_FRACTION = 5
# An incremental window's batches stop growing at 2,500 records (unless the caller sets the size):
# the last full batch is mapped and loaded one step after another once the walk has read it, so a
# smaller one shortens a delta's tail. A 1% delta at 1,000,000 took 1.97 s instead of 2.16 s (median
# of 5 interleaved rounds). A full refresh keeps 5,000: its tail is a small part of it.
INCREMENTAL_BATCH_RECORDS = 2_500
DEFAULT_LOOKBACK = timedelta(minutes=10)


@dataclass(frozen=True)
class WindowRequest:
    """What the run asks for; the window itself is resolved against the stored cursor under the lock."""

    data_interval_end: datetime | None = None  # scheduled runs
    window_start: datetime | None = None  # manual runs (params)
    window_end: datetime | None = None
    full_refresh: bool = False
    lookback: timedelta = DEFAULT_LOOKBACK
    now: datetime | None = None  # injectable clock; default: datetime.now(UTC)


@dataclass(frozen=True)
class ResolvedWindow:
    mode: Literal["full", "incremental"]
    start: datetime | None
    end: datetime
    reason: str


@dataclass
class StreamRunResult:
    stream: str
    source_system: str
    mode: str
    window_start: datetime | None
    window_end: datetime
    window_reason: str
    dry_run: bool
    cursor_before: datetime | None
    cursor_after: datetime | None
    extracted: int = 0
    loaded_new: int = 0
    loaded_changed: int = 0
    skipped_unchanged: int = 0
    rejected: int = 0
    batch_ids: list[int] = field(default_factory=list)
    rows_by_table: dict[str, int] = field(default_factory=dict)
    dry_run_samples: dict[str, Any] = field(default_factory=dict)
    already_committed_batches: int = 0
    seconds: float = 0.0

    def add(self, result: BatchResult) -> None:
        self.batch_ids.append(result.batch_id)
        if result.already_committed:
            # An earlier try wrote this batch; this run wrote nothing for it.
            self.already_committed_batches += 1
            self.extracted += result.extracted
            self.skipped_unchanged += result.extracted
            return
        self.extracted += result.extracted
        self.loaded_new += result.loaded_new
        self.loaded_changed += result.loaded_changed
        self.skipped_unchanged += result.skipped_unchanged
        self.rejected += result.rejected
        for table, rows in result.rows_by_table.items():
            self.rows_by_table[table] = self.rows_by_table.get(table, 0) + rows

    def summary(self) -> dict[str, Any]:
        """Small, JSON-safe: what XCom and the demo summary carry."""
        return {
            "stream": self.stream,
            "mode": self.mode,
            "window_start": self.window_start.isoformat() if self.window_start else None,
            "window_end": self.window_end.isoformat(),
            "window_reason": self.window_reason,
            "dry_run": self.dry_run,
            "extracted": self.extracted,
            "new": self.loaded_new,
            "changed": self.loaded_changed,
            "unchanged": self.skipped_unchanged,
            "rejected": self.rejected,
            "batches": len(self.batch_ids),
            "already_committed_batches": self.already_committed_batches,
            "first_batch_id": self.batch_ids[0] if self.batch_ids else None,
            "last_batch_id": self.batch_ids[-1] if self.batch_ids else None,
            "rows_by_table": self.rows_by_table,
            "cursor_before": self.cursor_before.isoformat() if self.cursor_before else None,
            "cursor_after": self.cursor_after.isoformat() if self.cursor_after else None,
            "seconds": round(self.seconds, 3),
        }


def resolve_window(spec: StreamSpec, cursor: datetime | None, request: WindowRequest) -> ResolvedWindow:
    from erp_sync.clients.windows import compute_window

    # Sources stamp records in whole seconds: a window ending mid-second would read part of that
    # second and the cursor would then skip the rest, so the end is truncated to the second.
    now = (request.now or datetime.now(UTC)).replace(microsecond=0)
    retention = spec.incremental.retention_days if spec.incremental.kind == "stripe_events" else None
    if spec.incremental.kind == "none" or request.full_refresh:
        end = request.window_end or request.data_interval_end or now
        reason = "full_refresh requested" if request.full_refresh else "stream has no incremental mode"
        return ResolvedWindow("full", request.window_start, end, reason)
    mode, start, end, reason = compute_window(
        cursor=cursor,
        data_interval_end=request.data_interval_end,
        params_start=request.window_start,
        params_end=request.window_end,
        now=now,
        lookback=request.lookback,
        retention_days=retention,
    )
    return ResolvedWindow(mode, start, end, reason)


def batched_pages(
    pages: Iterable[Page], batch_records: int, first_batch_records: int | None = None
) -> Iterator[tuple[list[Page], bool]]:
    """Group pages into batches of about `batch_records` records; the flag marks the last batch.

    The first batch closes at `first_batch_records` (default: the same), so the load can start while
    the rest is extracted; each next batch may be twice the one before, up to `batch_records`. The
    last batch is always yielded (possibly empty): it is the one that moves the cursor. Deterministic
    for the same pages: a retry re-forms the same batches.
    """
    buffer: list[Page] = []
    count = 0
    limit = first_batch_records or batch_records
    for page in pages:
        if buffer and count + page.extracted > limit:
            yield buffer, False
            buffer, count, limit = [], 0, min(batch_records, 2 * limit)
        buffer.append(page)
        count += page.extracted
    yield buffer, True


def batch_sizes(mode: str, batch_records: int | None) -> tuple[int, int]:
    """(the first batch's size, the size later batches double up to) for a window in `mode`.
    `batch_records` set: a fifth of it, then it, in either mode. None: 1,000, then 5,000 for a full
    refresh and `INCREMENTAL_BATCH_RECORDS` for an incremental window."""
    size = batch_records or DEFAULT_BATCH_RECORDS
    first = max(1, size // FIRST_BATCH_FRACTION)
    if batch_records is None and mode == "incremental":
        return first, min(size, INCREMENTAL_BATCH_RECORDS)
    return first, size


def input_sha256(pages: Sequence[Page]) -> str:
    digest = hashlib.sha256()
    for page in pages:
        digest.update(page.url.encode())
        digest.update(b"\0")
        digest.update(page.body)
        digest.update(b"\0")
        for piece in page.fetched_children:
            digest.update(piece)
        digest.update(b"\0")
    return digest.hexdigest()


@gc_paused()
def sync_stream(
    *,
    spec: StreamSpec,
    client: Any,
    conn: Any,
    redis_client: Any,
    run_id: str,
    window: WindowRequest,
    namespace: str = "erpsync",
    batch_records: int | None = None,
    dry_run: bool = False,
    lock_timeout_s: float = 600.0,
    on_batch: Callable[[BatchResult], None] | None = None,
    read_ahead_pages: int = READ_AHEAD_PAGES,
    map_ahead: bool = True,
) -> StreamRunResult:
    """Run one stream's window to completion, or raise with the cursor untouched.

    Pages are read `read_ahead_pages` ahead in a background thread (0: inline), and with `map_ahead`
    the next batch is validated and mapped in another while this thread loads the current one, so
    extraction and mapping overlap the load's waits on Postgres and Redis (ADR 0006). Loads stay in
    this thread, one batch after the other. The garbage collector is paused for the run and run
    between batches (see `erp_sync.core.batching`). `batch_records` None sizes the batches by the
    window's mode (`batch_sizes`).
    """
    from erp_sync.clients.pages import meta_for_pages
    from erp_sync.store.counters import next_batch_id
    from erp_sync.store.ledger import RedisLedger
    from erp_sync.store.loader import find_committed, load_batch
    from erp_sync.store.locks import stream_lock
    from erp_sync.store.state import get_cursor

    started = time.monotonic()
    ledger = RedisLedger(redis_client, namespace=namespace)
    mapping_ahead = threading.Event()
    mapping_ahead.set()
    with stream_lock(conn, spec.source_system, spec.name, timeout_s=lock_timeout_s):
        cursor_before = get_cursor(conn, spec.source_system, spec.name)
        resolved = resolve_window(spec, cursor_before, window)
        log.info(
            "stream %s: %s window [%s, %s) (%s); cursor before: %s",
            spec.name,
            resolved.mode,
            resolved.start,
            resolved.end,
            resolved.reason,
            cursor_before,
        )
        result = StreamRunResult(
            stream=spec.name,
            source_system=spec.source_system,
            mode=resolved.mode,
            window_start=resolved.start,
            window_end=resolved.end,
            window_reason=resolved.reason,
            dry_run=dry_run,
            cursor_before=cursor_before,
            cursor_after=cursor_before,
        )
        # While batches are found committed, nothing reads their records: the client then decodes
        # pages for navigation only, and a batch that is loaded after all decodes its records then.
        pages = client.iter_pages(
            spec,
            mode=resolved.mode,
            window_start=resolved.start,
            window_end=resolved.end,
            records_needed=mapping_ahead.is_set,
        )
        with (
            _read_ahead(pages, read_ahead_pages) as ahead,
            _map_ahead(
                _prepare_batches(spec, ahead, batch_sizes(resolved.mode, batch_records), mapping_ahead),
                enabled=map_ahead,
            ) as prepared,
        ):
            for batch_no, batch in enumerate(prepared, 1):
                key = BatchKey(
                    run_id, spec.source_system, spec.name, resolved.start, resolved.end, batch.digest
                )
                cursor_after = resolved.end if batch.is_last and not dry_run else None
                # A retry re-reading a batch an earlier try committed needs only its key, not its mapping:
                # while batches are found committed, the next ones are not mapped ahead either.
                recorded = None if dry_run else find_committed(conn, key)
                if recorded is None:
                    mapping_ahead.set()
                else:
                    mapping_ahead.clear()
                loaded = recorded or load_batch(
                    conn,
                    ledger,
                    key,
                    batch.mapping(spec),
                    batch.pages,
                    batch_id=0 if dry_run else next_batch_id(redis_client, namespace, conn),
                    cursor_after=cursor_after,
                    dry_run=dry_run,
                    page_meta=meta_for_pages(batch.pages, resolved.mode),
                )
                loaded.check_conservation()
                result.add(loaded)
                if cursor_after is not None:
                    result.cursor_after = cursor_after
                if dry_run:
                    _merge_samples(result.dry_run_samples, getattr(loaded, "samples", None))
                if on_batch:
                    on_batch(loaded)
                log.info(
                    "stream %s batch %s: extracted %d, new %d, changed %d, unchanged %d, rejected %d%s",
                    spec.name,
                    loaded.batch_id,
                    loaded.extracted,
                    loaded.loaded_new,
                    loaded.loaded_changed,
                    loaded.skipped_unchanged,
                    loaded.rejected,
                    " (already committed by an earlier try)" if loaded.already_committed else "",
                )
                collect_between_batches(batch_no)
    result.seconds = time.monotonic() - started
    return result


@dataclass
class PreparedBatch:
    """One batch of pages with its input digest, mapped ahead of its load when that was worth it."""

    pages: list[Page]
    is_last: bool
    digest: str
    mapped: MappedBatch | None  # None: not mapped ahead

    def mapping(self, spec: StreamSpec) -> MappedBatch:
        if self.mapped is None:
            from erp_sync.core.transform import map_pages

            self.mapped = map_pages(spec, self.pages)
        return self.mapped


def _prepare_batches(
    spec: StreamSpec,
    pages: Iterable[Page],
    sizes: tuple[int, int],
    mapping_ahead: threading.Event,
) -> Iterator[PreparedBatch]:
    """Batches with their digests, mapped while `mapping_ahead` is set. (An event listing's older
    snapshots are already out of the pages, across batches too: the client drops them.)"""
    from erp_sync.store.loader import OUTBOX_GZIP_LEVEL

    first, size = sizes
    for batch_pages, is_last in batched_pages(pages, size, first):
        batch = PreparedBatch(batch_pages, is_last, input_sha256(batch_pages), mapped=None)
        if mapping_ahead.is_set():
            batch.mapping(spec)
            for page in batch_pages:  # the outbox's content, off the loading thread
                page.compressed(OUTBOX_GZIP_LEVEL)
        yield batch


def _map_ahead(
    batches: Iterator[PreparedBatch], *, enabled: bool
) -> contextlib.AbstractContextManager[Iterator[PreparedBatch]]:
    # One batch ahead, none behind it: a mapped batch (pages and frames) is ~100 MB at 5,000 invoices.
    return ReadAhead(batches, 1, name="map", handoff=True) if enabled else contextlib.nullcontext(batches)


def _read_ahead(pages: Iterator[Page], depth: int) -> contextlib.AbstractContextManager[Iterator[Page]]:
    if depth <= 0:
        return contextlib.nullcontext(pages)
    return ReadAhead(pages, depth, name="extract")


def _merge_samples(into: dict[str, Any], samples: dict[str, Any] | None, limit: int = 5) -> None:
    for action, rows in (samples or {}).items():
        bucket = into.setdefault(action, [])
        bucket.extend(rows[: max(0, limit - len(bucket))])


@dataclass
class ReplayResult:
    selected: int = 0
    replayed: int = 0  # loaded (new, changed, or already identical in staging)
    still_rejected: int = 0
    batch_ids: list[int] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)  # new reason code -> count, for the log

    def summary(self) -> dict[str, Any]:
        return {
            "selected": self.selected,
            "replayed": self.replayed,
            "still_rejected": self.still_rejected,
            "batch_ids": self.batch_ids,
            "still_rejected_by_reason": self.reasons,
        }


def replay_rejections(
    *,
    conn: Any,
    redis_client: Any,
    run_id: str,
    namespace: str = "erpsync",
    stream: str | None = None,
    reason: str | None = None,
    ids: Sequence[int] | None = None,
    batch_records: int = DEFAULT_BATCH_RECORDS,
) -> ReplayResult:
    """Push PENDING rejections back through validate -> transform -> dedupe -> load.

    Each one ends REPLAYED (marked in the load's own transaction) or stays PENDING with its new
    reason and one more attempt: none is dropped. A replayed record's version is the time it was
    first seen, so a newer version already in staging is never overwritten by it.
    """
    from erp_sync.store.rejections import pending_rejections

    result = ReplayResult()
    stored = pending_rejections(conn, stream=stream, reason=reason, ids=ids)
    conn.rollback()
    result.selected = len(stored)
    by_stream: dict[str, list[Any]] = {}
    for row in stored:
        by_stream.setdefault(row.stream, []).append(row)
    for stream_name, rows in by_stream.items():
        for start in range(0, len(rows), batch_records):
            _replay_chunk(
                conn,
                redis_client,
                run_id,
                namespace,
                stream_name,
                rows[start : start + batch_records],
                result,
            )
    return result


def _replay_chunk(
    conn: Any,
    redis_client: Any,
    run_id: str,
    namespace: str,
    stream_name: str,
    rows: Sequence[Any],
    result: ReplayResult,
) -> None:
    import orjson

    from erp_sync.core.batch import Rejection
    from erp_sync.core.transform import map_pages
    from erp_sync.store.counters import next_batch_id
    from erp_sync.store.ledger import RedisLedger
    from erp_sync.store.loader import load_batch
    from erp_sync.store.locks import stream_lock
    from erp_sync.streams import get_stream

    spec = get_stream(stream_name)
    records: list[dict[str, Any]] = []
    versions: list[int] = []
    problems: list[Rejection] = []
    id_by_payload: dict[bytes, int] = {}
    for row in rows:
        try:
            record = orjson.loads(row.raw_payload)
        except orjson.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            problems.append(row.as_rejection())
            continue
        records.append(record)
        versions.append(int(row.created_at.timestamp()))
        id_by_payload[orjson.dumps(record, option=orjson.OPT_SORT_KEYS)] = row.rejection_id
    # The run id is part of the input: a later replay of the same ids (after the fix) is a new batch,
    # while a retry of this replay task finds its own committed batch.
    body = orjson.dumps({"replay_run_id": run_id, "rejection_ids": [row.rejection_id for row in rows]})
    page = Page(
        stream=spec.name,
        page_no=1,
        url=f"replay:rejections:{spec.name}",
        body=body,
        records=records,
        versions=versions,
        problems=problems,
        deleted_ids=frozenset(row.source_id for row in rows if row.deleted and row.source_id),
    )
    mapped = map_pages(spec, [page])
    mapped.rejections = [_with_stored_id(r, id_by_payload) for r in mapped.rejections]
    replayed_ids = [row.rejection_id for row in rows]
    with stream_lock(conn, spec.source_system, spec.name):
        key = BatchKey(run_id, spec.source_system, spec.name, None, None, input_sha256([page]))
        batch = load_batch(
            conn,
            RedisLedger(redis_client, namespace=namespace),
            key,
            mapped,
            [page],
            batch_id=next_batch_id(redis_client, namespace, conn),
            cursor_after=None,
            page_meta={"mode": "replay"},
            replayed_ids=replayed_ids,
        )
    batch.check_conservation()
    result.batch_ids.append(batch.batch_id)
    result.still_rejected += batch.rejected
    result.replayed += batch.extracted - batch.rejected
    for rejection in mapped.rejections:
        result.reasons[rejection.reason_code] = result.reasons.get(rejection.reason_code, 0) + 1


def _with_stored_id(rejection: Any, id_by_payload: dict[bytes, int]) -> Any:
    """Attach the stored rejection's id to a record rejected again, so its row is updated, not duplicated."""
    import dataclasses

    import orjson

    if rejection.rejection_id is not None:
        return rejection
    try:
        payload = orjson.dumps(orjson.loads(rejection.raw_payload), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
        return rejection
    return dataclasses.replace(rejection, rejection_id=id_by_payload.get(payload))
