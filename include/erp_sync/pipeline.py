"""One stream's sync, end to end: extract -> validate/transform -> dedupe/load, streamed in batches.

Airflow-free: the operator builds the client, the Postgres connection and the Redis client from
Airflow Connections and calls `sync_stream`; the benchmark and the tests call it directly.

Memory stays bounded: pages are buffered only until `batch_records` records are waiting, then
mapped and committed. The stream cursor moves only with the window's last batch (Stripe lists
newest first, so the window is complete only then); see docs/ARCHITECTURE.md "Cursor".
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from erp_sync.core.batch import BatchKey, BatchResult, Page
from erp_sync.streams.spec import StreamSpec

log = logging.getLogger(__name__)

DEFAULT_BATCH_RECORDS = 5_000
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
    mode: str  # "full" | "incremental"
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
    seconds: float = 0.0

    def add(self, result: BatchResult) -> None:
        self.extracted += result.extracted
        self.loaded_new += result.loaded_new
        self.loaded_changed += result.loaded_changed
        self.skipped_unchanged += result.skipped_unchanged
        self.rejected += result.rejected
        self.batch_ids.append(result.batch_id)
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
            "first_batch_id": self.batch_ids[0] if self.batch_ids else None,
            "last_batch_id": self.batch_ids[-1] if self.batch_ids else None,
            "rows_by_table": self.rows_by_table,
            "cursor_before": self.cursor_before.isoformat() if self.cursor_before else None,
            "cursor_after": self.cursor_after.isoformat() if self.cursor_after else None,
            "seconds": round(self.seconds, 3),
        }


def resolve_window(spec: StreamSpec, cursor: datetime | None, request: WindowRequest) -> ResolvedWindow:
    from erp_sync.clients.windows import compute_window

    now = request.now or datetime.now(UTC)
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


def batched_pages(pages: Iterable[Page], batch_records: int) -> Iterator[tuple[list[Page], bool]]:
    """Group pages into batches of about `batch_records` records; the flag marks the last batch.

    The last batch is always yielded (possibly empty): it is the one that moves the cursor.
    """
    buffer: list[Page] = []
    count = 0
    for page in pages:
        if buffer and count + page.extracted > batch_records:
            yield buffer, False
            buffer, count = [], 0
        buffer.append(page)
        count += page.extracted
    yield buffer, True


def input_sha256(pages: Sequence[Page]) -> str:
    digest = hashlib.sha256()
    for page in pages:
        digest.update(page.url.encode())
        digest.update(b"\0")
        digest.update(page.body)
        digest.update(b"\0")
    return digest.hexdigest()


def sync_stream(
    *,
    spec: StreamSpec,
    client: Any,
    conn: Any,
    redis_client: Any,
    run_id: str,
    window: WindowRequest,
    namespace: str = "erpsync",
    batch_records: int = DEFAULT_BATCH_RECORDS,
    dry_run: bool = False,
    lock_timeout_s: float = 600.0,
    on_batch: Callable[[BatchResult], None] | None = None,
) -> StreamRunResult:
    """Run one stream's window to completion, or raise with the cursor untouched."""
    from erp_sync.core.transform import map_pages
    from erp_sync.store.counters import next_batch_id
    from erp_sync.store.ledger import RedisLedger
    from erp_sync.store.loader import load_batch
    from erp_sync.store.locks import stream_lock
    from erp_sync.store.state import get_cursor

    started = time.monotonic()
    ledger = RedisLedger(redis_client, namespace=namespace)
    with stream_lock(conn, spec.source_system, spec.name, timeout_s=lock_timeout_s):
        cursor_before = get_cursor(conn, spec.source_system, spec.name)
        resolved = resolve_window(spec, cursor_before, window)
        log.info(
            "stream %s: %s window [%s, %s) (%s); cursor before: %s",
            spec.name, resolved.mode, resolved.start, resolved.end, resolved.reason, cursor_before,
        )
        if ledger.is_empty():
            log.info("Redis ledger is empty: rebuilding it from Postgres before deduping")
            ledger.rebuild_from_postgres(conn, spec.target_tables)
        result = StreamRunResult(
            stream=spec.name, source_system=spec.source_system, mode=resolved.mode,
            window_start=resolved.start, window_end=resolved.end, window_reason=resolved.reason,
            dry_run=dry_run, cursor_before=cursor_before, cursor_after=cursor_before,
        )
        pages = client.iter_pages(spec, mode=resolved.mode, window_start=resolved.start,
                                  window_end=resolved.end)
        for batch_pages, is_last in batched_pages(pages, batch_records):
            mapped = map_pages(spec, batch_pages)
            key = BatchKey(run_id, spec.source_system, spec.name, resolved.start, resolved.end,
                           input_sha256(batch_pages))
            cursor_after = resolved.end if is_last and not dry_run else None
            batch = load_batch(
                conn, ledger, key, mapped, batch_pages,
                batch_id=0 if dry_run else next_batch_id(redis_client, namespace, conn),
                cursor_after=cursor_after, dry_run=dry_run,
            )
            batch.check_conservation()
            result.add(batch)
            if cursor_after is not None:
                result.cursor_after = cursor_after
            if dry_run:
                _merge_samples(result.dry_run_samples, getattr(batch, "samples", None))
            if on_batch:
                on_batch(batch)
            log.info(
                "stream %s batch %s: extracted %d, new %d, changed %d, unchanged %d, rejected %d%s",
                spec.name, batch.batch_id, batch.extracted, batch.loaded_new, batch.loaded_changed,
                batch.skipped_unchanged, batch.rejected,
                " (already committed by an earlier try)" if batch.already_committed else "",
            )
    result.seconds = time.monotonic() - started
    return result


def _merge_samples(into: dict[str, Any], samples: dict[str, Any] | None, limit: int = 5) -> None:
    for action, rows in (samples or {}).items():
        bucket = into.setdefault(action, [])
        bucket.extend(rows[: max(0, limit - len(bucket))])
