"""One reconciliation, end to end, without Airflow: read both sides, compare, store, render, back up,
and (on request) repair.

    parse params (a bad period fails here, before any read)
    for each stream:
        SaaS side: an independent re-read of the list endpoint by `created` for the period, mapped
                   with the sync's `map_pages`, headers only (no line requests, no line mapping),
                   kept as compact integer columns
        ERP side:  SQL aggregates + a streamed record fetch over erp_staging (or a configured SQL
                   over the ERP's posted tables)
        records only the ERP side holds: looked up by id in the SaaS (up to a limit), compared
                   with the rest when they exist and fall in the period
        compare totals (per currency/status/metric, with tolerances) and records
    table invariants, conservation of the period's sync_batches
    store the report (new version; immutable), render JSON/CSV/HTML, back them up when a backup
    function is given

Repair re-sends exactly the records the latest report for the period found missing in the ERP or
mismatched: it evicts them, their child rows included, from the Redis ledger, marks the tampered staging
rows' `row_sha256` as unknown (the upsert only rewrites a row whose hash differs), fetches each record
by id from the SaaS (the first chunk of every stream before anything is written, ADR 0023), and loads it
through `load_batch`. Records the report found missing in the SaaS are asked for by id, before anything
is written: those the SaaS confirms gone (a 404 with one of the stream's gone codes, Stripe's
`resource_missing` by default, or a deleted stub; ADR 0029) are staged as tombstones in one recorded
batch per stream, within `max_tombstones` and `max_tombstone_share` (`erp_sync.tombstone_repair`, ADR
0020); those that exist stay in the next report (ADR 0017). A stream whose API has no by-id lookup is
re-sent from a re-listing of the period (ADR 0024); its records missing in the SaaS are not looked up,
and the result says so. Then it reconciles again. Rows are never deleted (the loader cannot delete);
tombstones (`interface_status = 'DELETED'`, ADR 0015) are left out of the ERP side.

Every stream is re-read, looked up and repaired through its own source system's client
(`SourceClients.for_spec`: the orders API's streams through its connection, Stripe's through
`saas_api`). The Airflow task (`dags/erp_drift_reconciliation.py`) only builds the connections (a
client for each source system the run's streams need) and calls `conf_from_params` and `run_request`
(per period); the tests call the same functions with real Postgres, Redis and the sandbox.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import orjson
import pandas as pd
from psycopg2.sql import SQL, Composable, Identifier, Literal

from erp_sync.backup import report_manifest
from erp_sync.clients.sources import SourceClients, streams_by_source_system
from erp_sync.core.batch import CHILDREN_SHA256, BatchKey, Page
from erp_sync.core.batching import (
    READ_AHEAD_PAGES,
    ReadAhead,
    chunked,
    collect_between_batches,
    each_in_flight,
    gc_paused,
)
from erp_sync.core.params import InvalidParamError, parse_bool, parse_streams, parse_utc
from erp_sync.core.reconcile import (
    METRICS_BY_TABLE,
    PERIOD_COLUMN_BY_TABLE,
    SCALE,
    LookedUp,
    LookupById,
    ReconcileResult,
    Side,
    SideBuilder,
    StreamResult,
    ToleranceConfig,
    TotalLine,
    empty_items,
    empty_side,
    reconcile_stream,
    side_from_frame,
)
from erp_sync.core.tombstones import (
    DEFAULT_MAX_TOMBSTONE_SHARE,
    DEFAULT_MAX_TOMBSTONES,
    TombstonePolicy,
)
from erp_sync.reports import file_names, render_csv, render_html, render_json, render_totals_csv
from erp_sync.reports.render import repair_commands
from erp_sync.store import drift
from erp_sync.streams import STREAMS, get_stream
from erp_sync.streams.spec import NO_BY_ID_LOOKUP, StreamSpec

if TYPE_CHECKING:
    from erp_sync.tombstone_repair import StreamLookups, StreamTombstones

log = logging.getLogger(__name__)

DEFAULT_STREAMS: tuple[str, ...] = ("invoices", "charges", "credit_notes")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SAAS_BATCH_RECORDS = 5_000
ERP_FETCH = 50_000
REPAIR_CHUNK = 100
REPAIRABLE_KINDS = ("missing_in_erp", "amount_mismatch", "status_mismatch")
PARAM_NAMES = frozenset(
    {
        "period_start",
        "period_end",
        "streams",
        "tolerances",
        "repair",
        "erp_sql",
        "saas_lookback_days",
        "lookup_missing_limit",
        "repair_tombstones",
        "max_tombstones",
        "max_tombstone_share",
    }
)
UNKNOWN_SHA = "0" * 64
# The SaaS side lists by `created`, an invoice counts in the period it was finalized in: Stripe
# finalizes a draft about an hour after creating it, so a period's SaaS listing starts a day early.
DEFAULT_SAAS_LOOKBACK_DAYS = 1
# A record the listing still misses (dated in the period, created before the lookback) is asked for
# by id: one GET each, so a period with more such records than this reports the rest missing_in_saas.
DEFAULT_LOOKUP_MISSING_LIMIT = 1_000

BackupFn = Callable[[str, bytes], str]  # (file name, bytes) -> remote path


class DriftExceededError(RuntimeError):
    """The reconciliation found drift beyond tolerance; the message says what, how much and where."""


# ---------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class ReconcileRequest:
    period_start: datetime
    period_end: datetime
    streams: tuple[str, ...]
    tolerances: ToleranceConfig = field(default_factory=ToleranceConfig)
    tolerances_raw: Mapping[str, Any] = field(default_factory=dict)
    repair: bool = False
    erp_sql: Mapping[str, str] = field(default_factory=dict)  # stream -> SQL over posted tables
    saas_lookback: timedelta = timedelta(days=DEFAULT_SAAS_LOOKBACK_DAYS)
    lookup_missing_limit: int = DEFAULT_LOOKUP_MISSING_LIMIT
    tombstones: TombstonePolicy = field(default_factory=TombstonePolicy)  # what repair may tombstone


def reconcilable_streams() -> list[str]:
    """Streams whose primary staging table has amounts to reconcile."""
    return [name for name, spec in STREAMS.items() if spec.target_tables[0] in METRICS_BY_TABLE]


def parse_period(
    start: Any, end: Any, *, now: datetime, default_start: datetime = EPOCH
) -> tuple[datetime, datetime]:
    """`[period_start, period_end)` in UTC; missing start = everything, missing end = now.

    End before start is refused with both values named; an equal start and end is an empty period.
    """
    start_at = parse_utc("period_start", start) or default_start
    end_at = parse_utc("period_end", end) or now
    if end_at < start_at:
        raise InvalidParamError(
            "period_end",
            f"period_end {end_at.isoformat()} is before period_start {start_at.isoformat()}: "
            "the period would be impossible; swap them or fix one",
        )
    return start_at.astimezone(UTC), end_at.astimezone(UTC)


def _left_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and not value)


def conf_from_params(params: Mapping[str, Any] | None, configured_erp_sql: Any = None) -> dict[str, Any]:
    """A DAG run's params without those left at an empty default (None, "", [], {}: not given; a 0
    or a False is given), plus the configured ERP-side SQL when set and the run gives none."""
    conf = {k: v for k, v in dict(params or {}).items() if not _left_empty(v)}
    if configured_erp_sql and "erp_sql" not in conf:
        conf["erp_sql"] = configured_erp_sql
    return conf


def parse_request(conf: Mapping[str, Any], *, now: datetime) -> ReconcileRequest:
    """Validate every parameter before anything is read (a bad one raises `InvalidParamError`)."""
    unexpected = sorted(set(conf) - PARAM_NAMES)
    if unexpected:
        raise InvalidParamError(unexpected[0], f"not a parameter of this DAG; allowed: {sorted(PARAM_NAMES)}")
    start, end = parse_period(conf.get("period_start"), conf.get("period_end"), now=now)
    streams = parse_streams("streams", conf.get("streams"), reconcilable_streams(), DEFAULT_STREAMS)
    raw_tol = conf.get("tolerances") or {}
    if not isinstance(raw_tol, Mapping):
        raise InvalidParamError("tolerances", f"expected an object, got {raw_tol!r}")
    try:
        tolerances = ToleranceConfig.from_mapping(raw_tol)
    except ValueError as exc:
        raise InvalidParamError("tolerances", str(exc)) from exc
    erp_sql = conf.get("erp_sql") or {}
    if not isinstance(erp_sql, Mapping) or not all(isinstance(v, str) for v in erp_sql.values()):
        raise InvalidParamError("erp_sql", "expected an object mapping stream names to SQL text")
    lookback = _non_negative_int(conf, "saas_lookback_days", DEFAULT_SAAS_LOOKBACK_DAYS)
    return ReconcileRequest(
        period_start=start,
        period_end=end,
        streams=tuple(sorted(streams)),
        tolerances=tolerances,
        tolerances_raw=dict(raw_tol),
        repair=parse_bool("repair", conf.get("repair")),
        erp_sql=dict(erp_sql),
        saas_lookback=timedelta(days=lookback),
        lookup_missing_limit=_non_negative_int(conf, "lookup_missing_limit", DEFAULT_LOOKUP_MISSING_LIMIT),
        tombstones=parse_tombstone_policy(conf),
    )


def parse_tombstone_policy(conf: Mapping[str, Any]) -> TombstonePolicy:
    """`repair_tombstones`, `max_tombstones` (at least 1) and `max_tombstone_share` (above 0, at most 1)."""
    max_tombstones = _non_negative_int(conf, "max_tombstones", DEFAULT_MAX_TOMBSTONES)
    if max_tombstones < 1:
        raise InvalidParamError(
            "max_tombstones", "expected at least 1; set repair_tombstones=false to tombstone nothing"
        )
    return TombstonePolicy(
        enabled=parse_bool("repair_tombstones", conf.get("repair_tombstones"), default=True),
        max_per_stream=max_tombstones,
        max_share=_share(conf, "max_tombstone_share", DEFAULT_MAX_TOMBSTONE_SHARE),
    )


def _share(conf: Mapping[str, Any], name: str, default: Decimal) -> Decimal:
    """A share above 0 and at most 1, exact (0.1 is one tenth, not the nearest binary fraction)."""
    value = conf.get(name)
    if value is None:
        return default
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
            raise InvalidOperation
        share = Decimal(str(value))
    except InvalidOperation:
        raise InvalidParamError(name, f"expected a number above 0 and at most 1, got {value!r}") from None
    if not share.is_finite() or not Decimal(0) < share <= Decimal(1):
        raise InvalidParamError(name, f"expected a number above 0 and at most 1, got {value!r}")
    return share


def _non_negative_int(conf: Mapping[str, Any], name: str, default: int) -> int:
    value = conf.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidParamError(name, f"expected a non-negative integer, got {value!r}")
    return value


def scheduled_periods(window_start: datetime | None, window_end: datetime) -> list[tuple[datetime, datetime]]:
    """What an asset-triggered run reconciles: the sync's window, then month-to-date (deduplicated)."""
    end = window_end.astimezone(UTC)
    month_start = end.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    periods = []
    if window_start is not None and window_start < end:
        periods.append((window_start.astimezone(UTC), end))
    if (month_start, end) not in periods:
        periods.append((month_start, end))
    return periods


def sync_window_for_runs(conn: Any, run_ids: Sequence[str]) -> tuple[datetime | None, datetime] | None:
    """The window the given sync runs loaded (from their sync_batches), or None when they loaded nothing."""
    if not run_ids:
        return None
    with conn.cursor() as cur:
        cur.execute(
            "SELECT min(window_start), max(window_end), bool_or(window_start IS NULL) "
            "FROM erp_sync.sync_batches WHERE run_id = ANY(%s)",
            (list(run_ids),),
        )
        start, end, open_start = cur.fetchone()
    conn.rollback()
    if end is None:
        return None
    return (None if open_start else start), end


def periods_for_run(
    conf: Mapping[str, Any],
    *,
    now: datetime,
    scheduled_window: tuple[datetime | None, datetime] | None,
    asset_triggered: bool,
) -> list[ReconcileRequest]:
    """The requests one DAG run makes: the params' period (manual), or the triggering sync's window
    and month-to-date (asset-triggered, unless the params name a period)."""
    base = parse_request(conf, now=now)
    if not asset_triggered or conf.get("period_start") or conf.get("period_end"):
        return [base]
    window_start, window_end = scheduled_window if scheduled_window else (None, now)
    return [
        replace(base, period_start=s, period_end=e) for s, e in scheduled_periods(window_start, window_end)
    ]


# ---------------------------------------------------------------------------------------------
# The SaaS side


@dataclass
class SaasSideStats:
    pages: int = 0
    records: int = 0
    rejected: int = 0
    outside_period: int = 0


def _in_period(frame: pd.DataFrame, column: str, start: datetime, end: datetime) -> pd.Series:
    stamps = pd.to_datetime(frame[column], utc=True)
    return (stamps >= pd.Timestamp(start)) & (stamps < pd.Timestamp(end))


def listed_from(period_start: datetime, lookback: timedelta) -> datetime:
    """Where the SaaS side's listing by `created` starts: `lookback` before the period, not before 1970."""
    return max(period_start - lookback, EPOCH)


def read_saas_side(
    client: Any,
    spec: StreamSpec,
    period_start: datetime,
    period_end: datetime,
    *,
    lookback: timedelta = timedelta(0),
    batch_records: int = SAAS_BATCH_RECORDS,
) -> tuple[Side, SaasSideStats]:
    """Re-read the stream's list endpoint by `created` and map its headers with the sync's mapping.

    Header-only: reconciliation compares the primary table's columns (`METRICS_BY_TABLE`, currency,
    status), so the listing runs with a copy of the spec without children (the client makes no
    `/v1/invoices/{id}/lines` requests) and `map_pages(..., primary_only=True)` neither validates nor
    maps nor hashes lines; a truncated embedded `lines` list is simply not read. The rows have no
    `row_sha256` and are never loaded.

    Only rows whose period column (issued_at, received_at, ...) falls in the period are kept, the
    same rule the ERP side applies; `lookback` widens the listing for records created before the
    period but dated inside it. A long period's side spills to local disk (`SideBuilder`); the
    caller closes the returned `Side` (`reconcile_stream` does).
    """
    with gc_paused():
        return _read_saas_side(client, spec, period_start, period_end, lookback, batch_records)


def _read_saas_side(
    client: Any,
    spec: StreamSpec,
    period_start: datetime,
    period_end: datetime,
    lookback: timedelta,
    batch_records: int,
) -> tuple[Side, SaasSideStats]:
    from erp_sync.core.transform import header_source_fields, map_pages

    table = spec.target_tables[0]
    metrics = METRICS_BY_TABLE[table]
    period_col = PERIOD_COLUMN_BY_TABLE[table]
    builder = SideBuilder(stream=spec.name, metrics=metrics)
    stats = SaasSideStats()
    if period_end <= period_start:
        return builder.finish(), stats

    header_spec = replace(spec, children=())

    def consume(pages: list[Page]) -> None:
        mapped = map_pages(header_spec, pages, primary_only=True)
        stats.rejected += len(mapped.rejections)
        rows = mapped.rows
        stats.records += len(rows)
        if rows.empty:
            return
        inside = rows[_in_period(rows, period_col, period_start, period_end)]
        stats.outside_period += len(rows) - len(inside)
        builder.add(inside)

    batches = 0

    def consume_and_collect(pages: list[Page]) -> None:
        nonlocal batches
        consume(pages)
        pages.clear()  # the batch's raw pages are garbage now
        batches += 1
        collect_between_batches(batches)

    pending: list[Page] = []
    count = 0
    listing = client.iter_pages(
        header_spec,
        mode="full",
        window_start=listed_from(period_start, lookback),
        window_end=period_end,
        record_fields=header_source_fields(spec),
    )
    # Pages are read ahead in a thread: the HTTP waits overlap the mapping of the previous batch.
    # A read that fails removes what the builder spilled.
    with builder, ReadAhead(listing, READ_AHEAD_PAGES, name="reconcile-extract") as pages:
        for page in pages:
            stats.pages += 1
            pending.append(page)
            count += page.extracted
            if count >= batch_records:
                consume_and_collect(pending)
                pending, count = [], 0
        if pending:
            consume_and_collect(pending)
    return builder.finish(), stats


@dataclass
class LookupStats:
    """What the lookups by id found besides records in the period (`LookedUp` counts those)."""

    not_found: int = 0
    outside_period: int = 0
    rejected: int = 0
    unconfirmed: int = 0  # asked, but the API's 404 did not say missing: the by-id path is wrong
    not_looked_up: int = 0  # not asked: the stream declares no by-id path (ADR 0023)


def lookup_by_id(
    client: Any,
    spec: StreamSpec,
    period_start: datetime,
    period_end: datetime,
    *,
    limit: int,
    stats: LookupStats,
) -> LookupById:
    """GET each record the ERP holds and the listing missed; map its header like the listing's.

    A record that no longer exists (a 404 with one of the stream's gone codes), that the mapping
    rejects, or whose period column is outside the period stays `missing_in_saas` (counted in
    `stats`). So do all of them when the API answers the stream's by-id path with a 404 that does
    not say the record is missing (an API whose gone code the stream does not declare, or a wrong
    path; the listing already reached the base URL): counted `unconfirmed`, with a warning naming the
    URL, rather than failing the report. A stream that
    declares no by-id path is not asked at all: its records are counted `not_looked_up`, with a
    warning naming the stream (ADR 0023).
    """
    from erp_sync.clients.errors import UnconfirmedNotFoundError
    from erp_sync.clients.pages import page_meta_for
    from erp_sync.core.transform import map_pages

    header_spec = replace(spec, children=())
    table = spec.target_tables[0]
    metrics = METRICS_BY_TABLE[table]

    def find(ids: list[str]) -> pd.DataFrame:
        if not spec.looks_up_by_id:
            log.warning(
                "reconcile %s: %d records missing in the SaaS not looked up by id: the stream declares no"
                " by-id path (record_path=None); they stay missing_in_saas", spec.name, len(ids),
            )  # fmt: skip
            stats.not_looked_up += len(ids)
            return empty_side(metrics)
        try:
            records, gone = fetch_records(client, header_spec, ids)
        except UnconfirmedNotFoundError as exc:
            log.warning("reconcile %s: %d records not looked up by id: %s", spec.name, len(ids), exc)
            stats.unconfirmed += len(ids)
            return empty_side(metrics)
        stats.not_found += len(gone)
        if not records:
            return empty_side(metrics)
        url = f"{client.base_url}{spec.path}?looked_up_by_id=1"
        page = fetched_page(
            header_spec, records, url, page_meta_for("full", int(datetime.now(UTC).timestamp()))
        )
        mapped = map_pages(header_spec, [page], primary_only=True)
        stats.rejected += len(mapped.rejections)
        rows = mapped.rows
        if rows.empty:
            return empty_side(metrics)
        inside = rows[_in_period(rows, PERIOD_COLUMN_BY_TABLE[table], period_start, period_end)]
        stats.outside_period += len(rows) - len(inside)
        return side_from_frame(inside, metrics) if len(inside) else empty_side(metrics)

    return LookupById(limit=limit, find=find)


def fetched_page(
    spec: StreamSpec, records: list[dict[str, Any]], url: str, page_meta: Mapping[str, Any], page_no: int = 1
) -> Page:
    """Records fetched one by one (or kept from a re-listing), as the page a listing of them would have
    been, under the stream's record selector (`page_meta`: `page_meta_for("full", <listing time>)`)."""
    from erp_sync.clients.pages import page_from_body

    listed: Any = records
    for key in reversed(spec.record_selector.split(".")):
        listed = {key: listed}
    body = orjson.dumps({"object": "list", **listed, "has_more": False, "url": spec.path})
    return page_from_body(spec, body, url, page_meta, page_no)


# ---------------------------------------------------------------------------------------------
# The ERP side


def staging_sql(spec: StreamSpec) -> Composable:
    """The default ERP-side record query over erp_staging for the stream's primary table."""
    table = spec.target_tables[0]
    period_col = Identifier(PERIOD_COLUMN_BY_TABLE[table])
    return SQL(
        "SELECT source_id, currency_code, status, {metrics}, sync_batch_id FROM erp_staging.{table} "
        "WHERE source_system = %(source_system)s AND {col} >= %(period_start)s AND {col} < %(period_end)s"
        " AND interface_status <> 'DELETED'"  # a tombstone: the SaaS no longer lists it either
    ).format(
        metrics=SQL(", ").join(Identifier(m) for m in METRICS_BY_TABLE[table]),
        table=Identifier(table),
        col=period_col,
    )


def _records_sql(spec: StreamSpec, sql: str | None) -> Composable:
    """The configured SQL over the ERP's posted tables (trusted config, not user input), or staging's."""
    return SQL(sql) if sql else staging_sql(spec)


def _scaled_sum(metric: str) -> Composable:
    return SQL("coalesce(sum(round(r.{m} * {f})), 0)::bigint AS {m}").format(
        m=Identifier(metric), f=Literal(10**SCALE)
    )


def _scaled(metric: str) -> Composable:
    return SQL("round(r.{m} * {f})::bigint AS {m}").format(m=Identifier(metric), f=Literal(10**SCALE))


def _erp_params(spec: StreamSpec, start: datetime, end: datetime) -> dict[str, Any]:
    return {"source_system": spec.source_system, "period_start": start, "period_end": end}


def erp_totals(
    conn: Any, spec: StreamSpec, start: datetime, end: datetime, sql: str | None = None
) -> pd.DataFrame:
    """SQL aggregates per (currency_code, status): count and integer-thousandth sums."""
    metrics = METRICS_BY_TABLE[spec.target_tables[0]]
    query = SQL(
        "SELECT upper(trim(r.currency_code)) AS currency_code, r.status::text AS status, count(*) AS count, "
        "{sums} FROM ({records}) r GROUP BY 1, 2 ORDER BY 1, 2"
    ).format(sums=SQL(", ").join(_scaled_sum(m) for m in metrics), records=_records_sql(spec, sql))
    with conn.cursor() as cur:
        cur.execute(query, _erp_params(spec, start, end))
        rows = cur.fetchall()
    frame = pd.DataFrame(rows, columns=["currency_code", "status", "count", *metrics])
    for col in ("count", *metrics):
        frame[col] = frame[col].astype("int64")
    return frame.set_index(["currency_code", "status"])


def read_erp_side(
    conn: Any, spec: StreamSpec, start: datetime, end: datetime, sql: str | None = None
) -> Side:
    """The period's ERP records, streamed through a server-side cursor into compact columns (a long
    period's spill to local disk; the caller closes the returned `Side`)."""
    metrics = METRICS_BY_TABLE[spec.target_tables[0]]
    builder = SideBuilder(stream=spec.name, metrics=metrics, with_batch_id=True)
    columns = ["source_id", "currency_code", "status", *metrics, "sync_batch_id"]
    query = SQL(
        "SELECT r.source_id::text, upper(trim(r.currency_code)), r.status::text, {amounts}, r.sync_batch_id "
        "FROM ({records}) r"
    ).format(amounts=SQL(", ").join(_scaled(m) for m in metrics), records=_records_sql(spec, sql))
    with builder, conn.cursor(name=f"erp_side_{spec.name}") as cur:
        cur.itersize = ERP_FETCH
        cur.execute(query, _erp_params(spec, start, end))
        while True:
            rows = cur.fetchmany(ERP_FETCH)
            if not rows:
                break
            builder.add_scaled(pd.DataFrame(rows, columns=columns))
    return builder.finish()


# ---------------------------------------------------------------------------------------------
# Table invariants (the DAG runs the same SQL through the common.sql check operators)

# The invariants that can fail record by record, as the rows that break them (`i` an invoice, `l` a
# line): an invariant holds when there are none, and a report names the first of them.
_ORPHAN_LINES = (
    "FROM erp_staging.ar_invoice_lines l WHERE NOT EXISTS "
    "(SELECT 1 FROM erp_staging.ar_invoices i WHERE i.source_system = l.source_system "
    "AND i.source_id = l.invoice_source_id)"
)
# A live invoice's lines, less their own (item-level) discounts, add up to its subtotal (before
# invoice-level discounts and exclusive tax, ADR 0016 and 0019); a source that states no subtotal is
# held to its total, a line that states no discount amounts counts whole. An invoice staged with the
# digest of its lines (`children_sha256`, ADR 0027) and without live lines adds up to 0, so a header
# whose lines are all gone from staging is caught too (ADR 0024); a header of a source that stages no
# lines (no digest, no line) is not held to it.
_LINES_NOT_ADDING_UP = (
    "FROM erp_staging.ar_invoices i LEFT JOIN (SELECT source_system, invoice_source_id, "
    "sum(amount - coalesce(discount_amount, 0)) AS lines_total FROM erp_staging.ar_invoice_lines "
    "WHERE interface_status <> 'DELETED' GROUP BY 1, 2) l "
    "ON l.source_system = i.source_system AND l.invoice_source_id = i.source_id "
    "WHERE i.interface_status <> 'DELETED' AND (l.lines_total IS NOT NULL OR i.children_sha256 IS NOT NULL) "
    "AND coalesce(l.lines_total, 0) <> coalesce(i.subtotal_amount, i.total_amount)"
)

INVARIANTS: dict[str, str] = {
    "invoice_keys_not_null": (
        "SELECT count(*) = 0 FROM erp_staging.ar_invoices WHERE source_system IS NULL OR source_id IS NULL"
    ),
    "invoice_keys_unique": (
        "SELECT count(*) = count(DISTINCT (source_system, source_id)) FROM erp_staging.ar_invoices"
    ),
    "no_orphan_invoice_lines": f"SELECT count(*) = 0 {_ORPHAN_LINES}",
    "invoice_lines_sum_to_subtotal": f"SELECT count(*) = 0 {_LINES_NOT_ADDING_UP}",
    "receipt_keys_unique": (
        "SELECT count(*) = count(DISTINCT (source_system, source_id)) FROM erp_staging.ar_receipts"
    ),
    "credit_memo_keys_unique": (
        "SELECT count(*) = count(DISTINCT (source_system, source_id)) FROM erp_staging.ar_credit_memos"
    ),
}


# For those invariants: the ids of the records that break them, with how many in all; `%s` the limit.
INVARIANT_VIOLATIONS: dict[str, str] = {
    "no_orphan_invoice_lines": f"SELECT l.source_id, count(*) OVER () {_ORPHAN_LINES} ORDER BY 1 LIMIT %s",
    "invoice_lines_sum_to_subtotal": (
        f"SELECT i.source_id, count(*) OVER () {_LINES_NOT_ADDING_UP} ORDER BY 1 LIMIT %s"
    ),
}
VIOLATIONS_SHOWN = 20


def invariant_violations(conn: Any, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """For each named invariant that has a listing: how many records break it and the first
    `VIOLATIONS_SHOWN` of their ids (`{"count": n, "first": [...]}`), when any do."""
    found: dict[str, dict[str, Any]] = {}
    with conn.cursor() as cur:
        for name in names:
            if name not in INVARIANT_VIOLATIONS:
                continue
            cur.execute(INVARIANT_VIOLATIONS[name], (VIOLATIONS_SHOWN,))
            rows = cur.fetchall()
            if rows:
                found[name] = {"count": int(rows[0][1]), "first": [str(row[0]) for row in rows]}
    conn.rollback()
    return found


def invariants_with_violations(conn: Any) -> dict[str, Any]:
    """`check_invariants`, plus `violations` naming the records behind each failed one that can be
    listed (what the drift report stores and shows)."""
    verdicts: dict[str, Any] = dict(check_invariants(conn))
    violations = invariant_violations(conn, [name for name, held in verdicts.items() if not held])
    if violations:
        verdicts["violations"] = violations
    return verdicts


def check_invariants(conn: Any) -> dict[str, bool]:
    """Each invariant's verdict (recorded in the report; the DAG's check tasks fail on them)."""
    results: dict[str, bool] = {}
    with conn.cursor() as cur:
        for name, sql in INVARIANTS.items():
            cur.execute(sql)
            results[name] = bool(cur.fetchone()[0])
    conn.rollback()
    return results


# ---------------------------------------------------------------------------------------------
# One reconciliation


@dataclass
class ReconcileOutcome:
    report_id: int
    version: int
    status: str
    content_sha256: str
    item_counts: dict[str, int]
    drifted: list[TotalLine]
    files: dict[str, str]  # kind -> file name
    backup_path: str | None
    result: ReconcileResult
    message: str

    def xcom(self) -> dict[str, Any]:
        """Small and JSON-safe, for XCom."""
        return {
            "report_id": self.report_id,
            "version": self.version,
            "status": self.status,
            "content_sha256": self.content_sha256,
            "items": self.item_counts,
            "backup_path": self.backup_path,
        }


def reconcile_period(
    *,
    conn: Any,
    clients: SourceClients,
    request: ReconcileRequest,
    dag_id: str | None = None,
    run_id: str | None = None,
    backup: BackupFn | None = None,
    repair_of_report_id: int | None = None,
    lock_timeout_s: float = 600.0,
    repair_summary: Mapping[str, Any] | None = None,
) -> ReconcileOutcome:
    """Compare the SaaS and the ERP for `request`'s period and streams; store and render the report.

    Both sides are read holding the streams' load locks (`store.locks.stream_lock`): a sync of one of
    them that is running finishes first (up to `lock_timeout_s`), and none starts until the reads
    are done, so a half-loaded window never shows as drift.

    A failure while reading either side is stored as an ERROR report (so the UI shows the attempt and
    its reason) and then re-raised. A re-check after a repair carries `repair_summary` (what the repair
    re-sent and tombstoned) in its summary.

    Each stream is read and looked up through its source system's client (`clients.for_spec`); a
    stream whose source system has none raises `MissingSourceClientError` before any read.
    """
    clients.check_serves(request.streams)
    sources: dict[str, Any] = {"saas": {}, "erp": {}}
    try:
        with _load_locks(conn, request.streams, lock_timeout_s):
            results, invariants = _read_and_compare(conn, clients, request, sources)
    except Exception as exc:
        conn.rollback()
        _store_error(conn, request, exc, sources, dag_id=dag_id, run_id=run_id)
        raise
    result = ReconcileResult(streams=results)
    conservation = drift.conservation_for_period(
        conn, request.period_start, request.period_end, streams_by_source_system(request.streams)
    )
    conn.rollback()
    commands = repair_commands(request.period_start, request.period_end, request.streams)
    header = drift.ReportHeader(
        period_start=request.period_start,
        period_end=request.period_end,
        streams=request.streams,
        status=result.status,
        summary=_summary(result) | ({"repair": dict(repair_summary)} if repair_summary is not None else {}),
        conservation=conservation,
        tolerances=dict(request.tolerances_raw),
        invariants=invariants,
        sources=sources,
        dag_id=dag_id,
        run_id=run_id,
        repair_command=commands.as_text(),
        repair_of_report_id=repair_of_report_id,
    )
    stored = drift.write_report(conn, header, result.totals, result.items)
    files, backup_path = _render_and_back_up(conn, stored.report_id, backup)
    outcome = ReconcileOutcome(
        report_id=stored.report_id,
        version=stored.version,
        status=result.status,
        content_sha256=stored.content_sha256,
        item_counts=result.item_counts(),
        drifted=result.drifted_totals(),
        files=files,
        backup_path=backup_path,
        result=result,
        message="",
    )
    outcome.message = describe(outcome, request)
    return outcome


@contextmanager
def _load_locks(conn: Any, streams: Iterable[str], timeout_s: float) -> Iterator[None]:
    """The load locks of `streams`, taken in one order (two reconciliations cannot deadlock; a sync
    takes one lock only)."""
    from erp_sync.store.locks import stream_lock

    specs = sorted((get_stream(name) for name in set(streams)), key=lambda s: (s.source_system, s.name))
    conn.rollback()
    with ExitStack() as held:
        for spec in specs:
            held.enter_context(stream_lock(conn, spec.source_system, spec.name, timeout_s=timeout_s))
        yield


def _read_and_compare(
    conn: Any, clients: SourceClients, request: ReconcileRequest, sources: dict[str, Any]
) -> tuple[list[StreamResult], dict[str, Any]]:
    """Both sides of every stream, then the comparisons, plus the invariants' verdicts (and the records
    behind a failed one, `invariants_with_violations`).

    The SaaS re-read (HTTP, decoding, mapping: this process's CPU) runs in a background thread while
    this thread reads the ERP side and checks the invariants on `conn` (Postgres's CPU, on the other
    core; psycopg2 releases the GIL while it waits). At 100,000 invoices the ERP side and the
    invariants took 1.2 s of an 8.3 s reconciliation when run one after the other. The thread reads
    the streams one after another, each into its own `SideBuilder`. Sides spilled to local disk are
    removed when their stream is compared, and on any error.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="saas-reread") as pool, ExitStack() as cleanup:
        saas_reads = {
            name: pool.submit(_read_saas_stream, clients, request, name) for name in request.streams
        }
        cleanup.callback(_close_saas_sides, saas_reads.values())
        erp_sides = {}
        for name in request.streams:
            erp, erp_t = _read_erp_side(conn, request, name, sources)
            erp_sides[name] = (cleanup.enter_context(erp), erp_t)
        invariants = invariants_with_violations(conn)
        results = [
            _compare_stream(name, saas_reads[name].result(), erp_sides.pop(name), request, sources, clients)
            for name in request.streams
        ]
    return results, invariants


def _read_saas_stream(
    clients: SourceClients, request: ReconcileRequest, name: str
) -> tuple[Side, SaasSideStats]:
    spec = get_stream(name)
    return read_saas_side(
        clients.for_spec(spec), spec, request.period_start, request.period_end, lookback=request.saas_lookback
    )


def _close_saas_sides(reads: Collection[Future[tuple[Side, SaasSideStats]]]) -> None:
    """Cancel the SaaS reads not started yet and remove the spilled files of those that finished."""
    for read in reads:
        read.cancel()
    for read in reads:
        if not read.cancelled() and read.exception() is None:
            read.result()[0].close()


def _compare_stream(
    name: str,
    saas_read: tuple[Side, SaasSideStats],
    erp_read: tuple[Side, pd.DataFrame],
    request: ReconcileRequest,
    sources: dict[str, Any],
    clients: SourceClients,
) -> StreamResult:
    (saas, stats), (erp, erp_t) = saas_read, erp_read
    spec = get_stream(name)
    sources["saas"][name] = {
        "endpoint": spec.path,
        "listed_by": "created",
        "listed_from": listed_from(request.period_start, request.saas_lookback).isoformat(),
        **stats.__dict__,
    }
    metrics = METRICS_BY_TABLE[spec.target_tables[0]]
    found = LookupStats()
    lookup = None
    if request.lookup_missing_limit:
        period = (request.period_start, request.period_end)
        limit = request.lookup_missing_limit
        lookup = lookup_by_id(clients.for_spec(spec), spec, *period, limit=limit, stats=found)
    result = reconcile_stream(name, saas, erp, metrics, request.tolerances, erp_totals=erp_t, lookup=lookup)
    sources["saas"][name]["looked_up_by_id"] = _looked_up_source(result.looked_up, found, request)
    sources["erp"][name]["records"] = result.erp_records
    log.info(
        "reconcile %s: SaaS %d records (%d pages, %d rejected, %d found by id), ERP %d records%s",
        name, result.saas_records, stats.pages, stats.rejected, result.looked_up.found, result.erp_records,
        " (spilled to local disk)" if saas.spilled or erp.spilled else "",
    )  # fmt: skip
    return result


def _looked_up_source(looked_up: LookedUp, stats: LookupStats, request: ReconcileRequest) -> dict[str, Any]:
    """The report's account of the records only the ERP held: asked for by id, and what came back;
    for a stream without a by-id path, how many were not asked and why."""
    account: dict[str, Any] = {
        "limit": request.lookup_missing_limit,
        "asked": looked_up.asked - stats.not_looked_up,
        "found_in_period": looked_up.found,
        "not_found": stats.not_found,
        "outside_period": stats.outside_period,
        "rejected": stats.rejected,
        "unconfirmed": stats.unconfirmed,
        "over_limit": looked_up.unasked,
    }
    if stats.not_looked_up:
        account |= {"not_looked_up": stats.not_looked_up, "reason": NO_BY_ID_LOOKUP}
    return account


def _read_erp_side(
    conn: Any, request: ReconcileRequest, name: str, sources: dict[str, Any]
) -> tuple[Side, pd.DataFrame]:
    spec = get_stream(name)
    sql = request.erp_sql.get(name)
    conn.rollback()
    with conn.cursor() as cur:  # records and aggregates from one snapshot
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    erp = read_erp_side(conn, spec, request.period_start, request.period_end, sql)
    try:
        erp_t = erp_totals(conn, spec, request.period_start, request.period_end, sql)
    except BaseException:
        erp.close()
        raise
    conn.rollback()
    table = spec.target_tables[0]
    # "records" (one per source_id) is known once the stream is compared
    sources["erp"][name] = {"sql": "configured" if sql else f"erp_staging.{table}"}
    return erp, erp_t


def _store_error(
    conn: Any,
    request: ReconcileRequest,
    exc: BaseException,
    sources: Mapping[str, Any],
    *,
    dag_id: str | None,
    run_id: str | None,
) -> None:
    header = drift.ReportHeader(
        period_start=request.period_start,
        period_end=request.period_end,
        streams=request.streams,
        status="ERROR",
        tolerances=dict(request.tolerances_raw),
        sources=sources,
        dag_id=dag_id,
        run_id=run_id,
        repair_command=repair_commands(request.period_start, request.period_end, request.streams).as_text(),
        error_message=f"{type(exc).__name__}: {exc}"[:2000],
    )
    try:
        stored = drift.write_report(conn, header, [], empty_items())
        log.error("reconciliation failed (%s); stored as ERROR report %s", exc, stored.report_id)
    except Exception:
        log.exception("reconciliation failed and its ERROR report could not be stored either")


def _summary(result: ReconcileResult) -> dict[str, Any]:
    return {
        "items": result.item_counts(),
        "records": {s.stream: {"saas": s.saas_records, "erp": s.erp_records} for s in result.streams},
        "totals_outside_tolerance": len(result.drifted_totals()),
    }


def _stored_report(conn: Any, report_id: int) -> dict[str, Any]:
    report = drift.get_report(conn, report_id)
    if report is None:
        conn.rollback()
        raise LookupError(f"no drift report {report_id}")
    return report


def _rendered(conn: Any, report: Mapping[str, Any]) -> dict[str, tuple[str, bytes]]:
    """The report's files (JSON, items CSV, totals CSV, HTML) rendered from the stored rows, by kind
    (`file_names`' keys): each one's name and bytes."""
    report_id = report["report_id"]
    names = file_names(report)
    files = {
        "json": render_json(report, drift.iter_items(conn, report_id)),
        "csv": render_csv(report, drift.iter_items(conn, report_id)),
        "totals_csv": render_totals_csv(report),
        "html": render_html(report, drift.iter_items(conn, report_id)),
    }
    conn.rollback()
    return {kind: (names[kind], data) for kind, data in files.items()}


def _render_and_back_up(
    conn: Any, report_id: int, backup: BackupFn | None
) -> tuple[dict[str, str], str | None]:
    report = _stored_report(conn, report_id)
    files = _rendered(conn, report)
    names = {kind: name for kind, (name, _) in files.items()}
    if backup is None:
        log.info("report %s: no backup target configured; backup_path stays empty", report_id)
        return names, None
    try:
        uploaded = {kind: (name, backup(name, data), data) for kind, (name, data) in files.items()}
        sidecar = report_manifest.build_report_manifest(report, uploaded)  # uploaded last: ADR 0025
        backup(report_manifest.manifest_name(names["json"]), report_manifest.dumps(sidecar))
    except Exception as exc:  # the report is stored; an SFTP outage must not lose it or hide drift
        log.warning(
            "report %s: backup failed (%s); backup_path stays empty, re-run to back it up", report_id, exc
        )
        return names, None
    json_path = uploaded["json"][1]
    drift.set_backup_path(conn, report_id, json_path)
    return names, json_path


def describe(outcome: ReconcileOutcome, request: ReconcileRequest) -> str:
    """The log text: what drifted, by how much, and where the report is."""
    period = f"[{request.period_start.isoformat()}, {request.period_end.isoformat()})"
    where = f"drift report {outcome.report_id} v{outcome.version}"
    if outcome.backup_path:
        where += f" (backup {outcome.backup_path})"
    if outcome.status == "OK":
        items = sum(outcome.item_counts.values())
        extra = f"; {items} record differences within tolerance" if items else ""
        streams = list(request.streams)
        return f"reconciliation OK for {period} streams {streams}: within tolerance{extra}; {where}"
    lines = [f"DRIFT beyond tolerance for {period} streams {list(request.streams)}; {where}"]
    for t in outcome.drifted[:50]:
        lines.append(
            f"  {t.stream} {t.currency_code} {t.status} {t.metric}: SaaS {t.saas_sum} ERP {t.erp_sum} "
            f"difference {t.difference} (tolerance abs {t.tolerance_abs}, rel {t.tolerance_rel})"
        )
    if len(outcome.drifted) > 50:
        lines.append(f"  ... {len(outcome.drifted) - 50} more totals outside tolerance")
    lines.append(f"  records: {outcome.item_counts}")
    lines.append(
        f"  repair: {repair_commands(request.period_start, request.period_end, request.streams).make}"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Repair


@dataclass
class SkippedStream:
    """A stream of the report the repair could not ask the SaaS about by id: what it left, and why."""

    reason: str
    not_resent: int = 0  # records missing in the ERP or mismatched
    not_looked_up: int = 0  # records missing in the SaaS (no tombstone without the SaaS's answer)

    def summary(self) -> dict[str, Any]:
        return {"reason": self.reason, "not_resent": self.not_resent, "not_looked_up": self.not_looked_up}


@dataclass
class RepairResult:
    report_id: int
    requested: dict[str, int]  # stream -> ids asked for
    fetched: dict[str, int]
    not_found: dict[str, list[str]]  # gone from the SaaS: nothing to re-send
    batch_ids: list[int]
    loaded_new: int = 0
    loaded_changed: int = 0
    skipped_unchanged: int = 0
    rejected: int = 0
    tombstones: dict[str, StreamTombstones] = field(default_factory=dict)  # stream -> (ADR 0020)
    skipped: dict[str, SkippedStream] = field(default_factory=dict)  # stream -> (ADR 0023)

    def summary(self) -> dict[str, Any]:
        """What the repair did, small and JSON-safe (the re-check report's summary, the XCom)."""
        return {
            "of_report": self.report_id,
            "resent": {
                "requested": dict(self.requested),
                "new": self.loaded_new,
                "changed": self.loaded_changed,
                "not_found": {stream: len(ids) for stream, ids in self.not_found.items()},
            },
            "tombstones": {stream: t.summary() for stream, t in sorted(self.tombstones.items())},
            "skipped": self.skipped_summary(),
        }

    def skipped_summary(self) -> dict[str, dict[str, Any]]:
        return {stream: skipped.summary() for stream, skipped in sorted(self.skipped.items())}


def repair_targets(conn: Any, report_id: int) -> dict[str, dict[str, set[str]]]:
    """stream -> {"missing": ids, "mismatched": ids} from a report's repairable items."""
    targets: dict[str, dict[str, set[str]]] = {}
    for item in drift.iter_items(conn, report_id):
        if item["kind"] not in REPAIRABLE_KINDS:
            continue
        bucket = targets.setdefault(item["stream"], {"missing": set(), "mismatched": set()})
        bucket["missing" if item["kind"] == "missing_in_erp" else "mismatched"].add(item["source_id"])
    conn.rollback()
    return targets


def fetch_records(
    client: Any, spec: StreamSpec, ids: Sequence[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """GET {path}/{id} for each id (children completed like a listing); returns (records, ids not found).

    Not found: the API's 404 with one of the stream's gone codes (`GoneAnswerSpec`, Stripe's
    `resource_missing` by default). A 404 without one raises `UnconfirmedNotFoundError` naming the
    URL (a wrong base URL or path), as every other failure raises.

    Up to the client's `child_concurrency` requests are in flight (a real API's round trip, not its
    rate budget, bounds one request after another); the records come back in the ids' order.
    """
    fetched = each_in_flight(
        lambda source_id: client.get_record(spec, source_id),
        ids,
        int(getattr(client, "child_concurrency", 1)),
        "get-by-id",
    )
    records = [record for record in fetched if record is not None]
    missing = [source_id for source_id, record in zip(ids, fetched, strict=True) if record is None]
    return records, missing


def _invalidate_rows(
    conn: Any, table: str, source_system: str, ids: Sequence[str], *, children_digest: bool = False
) -> int:
    """Mark rows whose content was changed outside the sync as unknown, so the upsert rewrites them;
    with `children_digest`, their children's digest too, so the load looks for removed child rows
    (ADR 0027): outside changes may have touched those as well."""
    if not ids:
        return 0
    forget_children = SQL(", {} = NULL").format(Identifier(CHILDREN_SHA256)) if children_digest else SQL("")
    try:
        with conn.cursor() as cur:
            cur.execute(
                SQL(
                    "UPDATE erp_staging.{} SET row_sha256 = %s{}"
                    " WHERE source_system = %s AND source_id = ANY(%s)"
                ).format(Identifier(table), forget_children),
                (UNKNOWN_SHA, source_system, list(ids)),
            )
            count = int(cur.rowcount)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return count


def relists(spec: StreamSpec) -> bool:
    """Whether the repair re-sends the stream's records from a re-listing of the period: it has no
    by-id path (ADR 0024). A listing completes truncated child lists at their own endpoints, as the
    sync's does, so child lists do not stand in the way (ADR 0024's amendment)."""
    return not spec.looks_up_by_id


def skipped_streams(lookups: Mapping[str, StreamLookups]) -> dict[str, SkippedStream]:
    """The streams whose records cannot be asked for by id (no by-id path declared), each with what it
    leaves undone, and a warning per stream saying so. Such a stream is re-sent from a re-listing
    (`relists`), so what it leaves is its records missing in the SaaS: a listing cannot tell gone."""
    skipped: dict[str, SkippedStream] = {}
    for stream, found in lookups.items():
        if found.not_asked_because is not None:
            left = skipped.setdefault(stream, SkippedStream(found.not_asked_because))
            left.not_looked_up = found.candidates
    for stream, left in sorted(skipped.items()):
        _warn_skipped(stream, left)
    return skipped


def _warn_skipped(stream: str, left: SkippedStream) -> None:
    log.warning(
        "repair %s: %d records missing in the SaaS not looked up: the stream declares no by-id path"
        " (record_path=None) and a listing cannot tell a gone record; they stay missing_in_saas",
        stream, left.not_looked_up,
    )  # fmt: skip


def relisted_records(
    client: Any, spec: StreamSpec, ids: Sequence[str], listed_from: datetime, until: datetime
) -> tuple[list[dict[str, Any]], list[str]]:
    """The records of `ids` as a listing of `[listed_from, until)` returns them, every field as received,
    and the ids it did not return (ADR 0024). One walk of the listing, before any write."""
    wanted = set(ids)
    found: dict[str, dict[str, Any]] = {}
    for page in client.iter_pages(spec, mode="full", window_start=listed_from, window_end=until):
        for position, record in enumerate(page.records):
            source_id = str(record.get(spec.primary_key))
            if source_id in wanted:
                found[source_id] = page.whole_record(position)
    return [found[i] for i in ids if i in found], [i for i in ids if i not in found]


@dataclass(frozen=True)
class RelistWindow:
    """What a repair re-lists for a stream without a by-id path: from where the report's re-read
    started listing it, up to the listing's own start (the records' newest snapshots)."""

    listed_from: Mapping[str, datetime]  # stream -> where the report's re-read listed it from
    period_start: datetime
    until: datetime

    def start_of(self, stream: str) -> datetime:
        return self.listed_from.get(stream, self.period_start)

    @classmethod
    def of_report(cls, report: Mapping[str, Any], until: datetime) -> RelistWindow:
        saas = (report.get("sources") or {}).get("saas") or {}
        listed_from = {
            stream: start
            for stream, source in saas.items()
            if (start := parse_utc("listed_from", source.get("listed_from"))) is not None
        }
        return cls(listed_from, _stored_time("period_start", report["period_start"]), until)


def _stored_time(name: str, value: Any) -> datetime:
    parsed = parse_utc(name, value)
    if parsed is None:
        raise ValueError(f"the report has no {name}")
    return parsed


@dataclass
class StreamResends:
    """One stream's records to re-send, the first chunk of them already fetched (before any write)."""

    spec: StreamSpec
    client: Any  # the stream's source system's
    ids: list[str]
    mismatched: set[str]
    first_chunk: tuple[list[dict[str, Any]], list[str]]  # fetch_records' (records, ids not found)
    relisted: bool = False  # the first chunk is every record, from a re-listing (ADR 0024)

    def fetched_chunks(self) -> Iterator[tuple[list[dict[str, Any]], list[str]]]:
        """The first chunk as fetched, then each later one fetched as it is reached."""
        yield self.first_chunk
        if self.relisted:
            return
        for chunk in chunked(self.ids[REPAIR_CHUNK:], REPAIR_CHUNK):
            yield fetch_records(self.client, self.spec, chunk)


def fetch_first_chunks(
    clients: SourceClients, targets: Mapping[str, Mapping[str, set[str]]], relist: RelistWindow | None = None
) -> dict[str, StreamResends]:
    """Every stream's re-sends, with their first chunk fetched, before the repair writes anything: a
    stream whose by-id path does not answer (`UnconfirmedNotFoundError`), or any other failure, raises
    here, whichever stream it is, rather than after earlier streams were written. A stream without a
    by-id path (`relists`) gets all its records at once, from one re-listing of `relist` (ADR 0024)."""
    resends = {}
    for stream, kinds in sorted(targets.items()):
        spec = get_stream(stream)
        client = clients.for_spec(spec)
        ids = sorted(kinds["missing"] | kinds["mismatched"])
        mismatched = set(kinds["mismatched"])
        if relists(spec) and relist is not None:
            start = relist.start_of(stream)
            log.info(
                "repair %s: no by-id path: re-listing [%s, %s) for %d records",
                stream, start.isoformat(), relist.until.isoformat(), len(ids),
            )  # fmt: skip
            listed = relisted_records(client, spec, ids, start, relist.until)
            resends[stream] = StreamResends(spec, client, ids, mismatched, listed, relisted=True)
        else:
            first = fetch_records(client, spec, ids[:REPAIR_CHUNK])
            resends[stream] = StreamResends(spec, client, ids, mismatched, first)
    return resends


@dataclass
class _Resender:
    """Loads a stream's re-sent records chunk by chunk, adding up what each batch did in `result`."""

    conn: Any
    ledger: Any
    redis_client: Any
    namespace: str
    report: Mapping[str, Any]
    run_id: str
    when: datetime
    result: RepairResult

    def resend(self, stream: str, resends: StreamResends) -> None:
        self.result.requested[stream] = len(resends.ids)
        for chunk_no, (records, gone) in enumerate(resends.fetched_chunks(), start=1):
            self.result.fetched[stream] = self.result.fetched.get(stream, 0) + len(records)
            if gone:
                self.result.not_found.setdefault(stream, []).extend(gone)
                log.warning(
                    "repair %s: %d records %s: %s", stream, len(gone),
                    "not returned by the re-listing" if resends.relisted else "no longer exist in the SaaS",
                    gone[:20],
                )  # fmt: skip
            if records:
                self._load(resends, records, chunk_no)

    def _load(self, resends: StreamResends, records: list[dict[str, Any]], chunk_no: int) -> None:
        from erp_sync.clients.pages import page_meta_for
        from erp_sync.core.transform import MAPPINGS, map_pages
        from erp_sync.pipeline import input_sha256
        from erp_sync.store.counters import next_batch_id
        from erp_sync.store.loader import load_batch

        spec, table = resends.spec, resends.spec.target_tables[0]
        fetched_ids = [str(r.get(spec.primary_key)) for r in records]
        _invalidate_rows(
            self.conn,
            table,
            spec.source_system,
            [i for i in fetched_ids if i in resends.mismatched],
            children_digest=MAPPINGS[spec.mapping].stores_children_digest,
        )
        # Versioned with the repair's start, taken before any fetch: a record a sync stages later with a
        # newer version is not overwritten, wherever the fetch fell relative to the stream's lock.
        meta = page_meta_for("full", int(self.when.timestamp()))
        report_id = self.report["report_id"]
        url = f"{resends.client.base_url}{spec.path}?repair_of_report={report_id}&chunk={chunk_no}"
        page = fetched_page(spec, records, url, meta, chunk_no)
        mapped = map_pages(spec, [page])
        # Every row of the re-sent records is evicted, child rows too, so Postgres decides each: an
        # invoice deleted from staging with its lines has its lines' entries still in the ledger, which
        # would skip them as unchanged and stage the header alone.
        self.ledger.evict(table, fetched_ids, source_system=spec.source_system)
        for child_table, rows in mapped.tables.items():
            if child_table != table:
                self.ledger.evict_frame(child_table, rows)
        key = BatchKey(
            self.run_id, spec.source_system, spec.name, self.report["period_start"], self.when,
            input_sha256([page]),
        )  # fmt: skip
        batch = load_batch(
            self.conn, self.ledger, key, mapped, [page],
            batch_id=next_batch_id(self.redis_client, self.namespace, self.conn), cursor_after=None,
            page_meta=meta,
        )  # fmt: skip
        batch.check_conservation()
        self._count(batch)
        log.info(
            "repair %s batch %s: %d fetched, new %d, changed %d, unchanged %d, rejected %d",
            spec.name, batch.batch_id, len(records), batch.loaded_new, batch.loaded_changed,
            batch.skipped_unchanged, batch.rejected,
        )  # fmt: skip

    def _count(self, batch: Any) -> None:
        result = self.result
        result.batch_ids.append(batch.batch_id)
        result.loaded_new += batch.loaded_new
        result.loaded_changed += batch.loaded_changed
        result.skipped_unchanged += batch.skipped_unchanged
        result.rejected += batch.rejected


def repair_report(
    *,
    conn: Any,
    redis_client: Any,
    clients: SourceClients,
    report_id: int,
    run_id: str,
    namespace: str = "erpsync",
    now: datetime | None = None,
    lock_timeout_s: float = 600.0,
    tombstones: TombstonePolicy | None = None,
) -> RepairResult:
    """Re-send exactly the records report `report_id` found missing in the ERP or mismatched, and stage
    as tombstones those it found missing in the SaaS that the SaaS confirms gone (ADR 0020).

    Before anything is written, the records missing in the SaaS are looked up, and the first chunk of
    every stream's re-sends is fetched: a stream with more gone records than `tombstones` allows raises
    `TombstoneLimitError`, and a by-id path that does not answer as the API's lookup (a 404 that does
    not say the record is missing: a wrong base URL or path) raises `UnconfirmedNotFoundError` naming
    the URL, whichever stream it is (ADR 0023). Each stream is asked through its source system's client.
    """
    from erp_sync.store.ledger import RedisLedger
    from erp_sync.store.locks import stream_lock
    from erp_sync.tombstone_repair import look_up_gone, stage_gone

    when = now or datetime.now(UTC)
    report = drift.get_report(conn, report_id)
    conn.rollback()
    if report is None:
        raise LookupError(f"no drift report {report_id} to repair")
    targets = repair_targets(conn, report_id)
    looked_up_at = datetime.now(UTC)
    lookups = look_up_gone(conn, clients, report, tombstones or TombstonePolicy())
    skipped = skipped_streams(lookups)
    # up to now, after the lookups: a record updated since the repair started is still listed
    relist = RelistWindow.of_report(report, until=datetime.now(UTC))
    resends = fetch_first_chunks(
        clients, {s: t for s, t in targets.items() if s not in skipped or relists(get_stream(s))}, relist
    )
    ledger = RedisLedger(redis_client, namespace=namespace)
    result = RepairResult(
        report_id=report_id, requested={}, fetched={}, not_found={}, batch_ids=[], skipped=skipped
    )
    resender = _Resender(
        conn=conn, ledger=ledger, redis_client=redis_client, namespace=namespace,
        report=report, run_id=run_id, when=when, result=result,
    )  # fmt: skip
    for stream, stream_resends in sorted(resends.items()):
        spec = stream_resends.spec
        with stream_lock(conn, spec.source_system, spec.name, timeout_s=lock_timeout_s):
            resender.resend(stream, stream_resends)
    result.tombstones = stage_gone(
        conn=conn, ledger=ledger, redis_client=redis_client, namespace=namespace, lookups=lookups,
        report=report, run_id=run_id, looked_up_at=looked_up_at, lock_timeout_s=lock_timeout_s,
    )  # fmt: skip
    return result


# ---------------------------------------------------------------------------------------------
# What the DAG task calls


@dataclass
class RunOutcome:
    reports: list[ReconcileOutcome]
    repair: RepairResult | None = None

    @property
    def drifted(self) -> list[ReconcileOutcome]:
        return [r for r in self.reports if r.status != "OK"]

    def xcom(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reports": [r.xcom() for r in self.reports]}
        if self.repair is not None:
            out["repair"] = {
                "report_id": self.repair.report_id,
                "requested": self.repair.requested,
                "new": self.repair.loaded_new,
                "changed": self.repair.loaded_changed,
                "not_found": self.repair.not_found,
                "tombstones": {s: t.summary() for s, t in sorted(self.repair.tombstones.items())},
                "skipped": self.repair.skipped_summary(),
            }
        return out


def run_request(
    *,
    conn: Any,
    clients: SourceClients,
    request: ReconcileRequest,
    redis_client: Any = None,
    namespace: str = "erpsync",
    dag_id: str | None = None,
    run_id: str = "manual",
    backup: BackupFn | None = None,
) -> RunOutcome:
    """Reconcile one period; with `repair`, first repair from the latest report for the period (one is
    made now when there is none), then reconcile again. Never raises for drift: see `raise_on_drift`.
    Every stream goes through its source system's client in `clients`; one without raises
    `MissingSourceClientError` before any read."""
    clients.check_serves(request.streams)
    if not request.repair:
        only = reconcile_period(
            conn=conn, clients=clients, request=request, dag_id=dag_id, run_id=run_id, backup=backup
        )
        return RunOutcome(reports=[only])
    if redis_client is None:
        raise ValueError("repair needs the Redis ledger (redis_client)")
    reports: list[ReconcileOutcome] = []
    latest = drift.latest_report(conn, request.period_start, request.period_end, request.streams)
    conn.rollback()
    if latest is None:
        first = reconcile_period(
            conn=conn, clients=clients, request=request, dag_id=dag_id, run_id=run_id, backup=backup
        )
        reports.append(first)
        base_id = first.report_id
    else:
        base_id = int(latest["report_id"])
    repaired = repair_report(
        conn=conn,
        redis_client=redis_client,
        clients=clients,
        report_id=base_id,
        run_id=run_id,
        namespace=namespace,
        tombstones=request.tombstones,
    )
    after = reconcile_period(
        conn=conn, clients=clients, request=request, dag_id=dag_id, run_id=run_id, backup=backup,
        repair_of_report_id=base_id, repair_summary=repaired.summary(),
    )  # fmt: skip
    reports.append(after)
    return RunOutcome(reports=reports, repair=repaired)


def raise_on_drift(outcome: RunOutcome) -> None:
    """Fail (so the task turns red and alerts fire) when the last report is beyond tolerance."""
    last = outcome.reports[-1]
    if last.status != "OK":
        raise DriftExceededError(last.message)
