"""Decode a backed-up drift report's JSON (`reports.render.render_json`) back into its rows (ADR 0025).

The JSON holds every column of `erp_sync.drift_reports` (its `backup_path` is empty: the file is
rendered before it is uploaded; the sidecar manifest names the path), every total and every item,
amounts as exact decimal strings and times with their offset. `decode_report` checks all of it before
a restore writes anything: the fields and their types, money as `Decimal` with at most the three
decimals the tables hold, aware timestamps, items numbered 1..n, no total twice, the item count, and
the report's content SHA-256 recomputed from the decoded rows as `store.drift.verify_report` does.
`check_matches_manifest` then holds the report to its sidecar.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from erp_sync.backup.report_manifest import SHA256_HEX, STATUSES, ReportManifest
from erp_sync.core.timeutil import NaiveDatetimeError, parse_iso8601
from erp_sync.store import drift

ITEM_KINDS = frozenset({"missing_in_erp", "missing_in_saas", "amount_mismatch", "status_mismatch"})
MONEY_LIMIT = Decimal(10) ** 21  # numeric(24,3)
TOLERANCE_REL_LIMIT = Decimal(1000)  # numeric(12,9)
_JSON_OBJECT_COLUMNS = ("summary", "conservation", "tolerances", "invariants", "sources")
_OPTIONAL_TEXT_COLUMNS = ("dag_id", "run_id", "repair_command", "error_message")


class ReportDocumentError(ValueError):
    """A report file that does not decode or does not hold together; the message names the file."""


@dataclass(frozen=True)
class ReportRows:
    """A report as its rows: the `drift_reports` columns (without `backup_path`), totals, items."""

    header: dict[str, Any]
    totals: list[dict[str, Any]]
    items: list[dict[str, Any]]

    @property
    def report_id(self) -> int:
        return int(self.header["report_id"])


class _Reader:
    """Field checks of one file; every error names the file and where in it."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, problem: str) -> ReportDocumentError:
        return ReportDocumentError(f"{self.where}: {problem}")

    def typed(self, record: Mapping[str, Any], name: str, kind: type, at: str) -> Any:
        value = record.get(name)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise self.fail(f"{at}.{name} is {value!r}, not a {kind.__name__}")
        return value

    def optional_text(self, record: Mapping[str, Any], name: str, at: str) -> str | None:
        return None if record.get(name) is None else str(self.typed(record, name, str, at))

    def count(self, record: Mapping[str, Any], name: str, at: str, minimum: int = 0) -> int:
        value = int(self.typed(record, name, int, at))
        if value < minimum:
            raise self.fail(f"{at}.{name} is {value}, below {minimum}")
        return value

    def time(self, record: Mapping[str, Any], name: str, at: str) -> datetime:
        text = self.typed(record, name, str, at)
        try:
            return parse_iso8601(text)
        except NaiveDatetimeError:
            raise self.fail(f"{at}.{name} {text!r} has no UTC offset") from None
        except ValueError:
            raise self.fail(f"{at}.{name} {text!r} is not an ISO timestamp") from None

    def decimal(self, record: Mapping[str, Any], name: str, at: str, places: int, limit: Decimal) -> Decimal:
        text = self.typed(record, name, str, at)  # a number in JSON would have passed through a float
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise self.fail(f"{at}.{name} {text!r} is not a decimal amount") from None
        exponent = value.as_tuple().exponent
        if (
            not value.is_finite()
            or not isinstance(exponent, int)
            or exponent < -places
            or abs(value) >= limit
        ):
            raise self.fail(f"{at}.{name} {text!r} does not fit the table (at most {places} decimals)")
        return value

    def money(self, record: Mapping[str, Any], name: str, at: str) -> Decimal:
        return self.decimal(record, name, at, 3, MONEY_LIMIT)

    def optional_money(self, record: Mapping[str, Any], name: str, at: str) -> Decimal | None:
        return None if record.get(name) is None else self.money(record, name, at)

    def currency(
        self, record: Mapping[str, Any], name: str, at: str, *, optional: bool = False
    ) -> str | None:
        if optional and record.get(name) is None:
            return None
        code = str(self.typed(record, name, str, at))
        if len(code) != 3:
            raise self.fail(f"{at}.{name} {code!r} is not a three-letter currency code")
        return code

    def exact_fields(self, record: Any, fields: tuple[str, ...], at: str) -> Mapping[str, Any]:
        if not isinstance(record, Mapping):
            raise self.fail(f"{at} is not an object")
        if set(record) != set(fields):
            raise self.fail(f"{at} has fields {sorted(record)}, expected {sorted(fields)}")
        return record


def _header(read: _Reader, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise read.fail("report is not an object")
    missing = set(drift.REPORT_COLUMNS) - raw.keys()
    if missing:
        raise read.fail(f"report lacks {sorted(missing)}")
    at = "report"
    streams = read.typed(raw, "streams", list, at)
    if not streams or not all(isinstance(s, str) and s for s in streams) or streams != sorted(set(streams)):
        raise read.fail(f"report.streams {streams!r} are not sorted, distinct stream names")
    status = read.typed(raw, "status", str, at)
    if status not in STATUSES:
        raise read.fail(f"report.status {status!r} is not one of {sorted(STATUSES)}")
    content_sha = read.typed(raw, "content_sha256", str, at)
    if not SHA256_HEX.match(content_sha):
        raise read.fail(f"report.content_sha256 {content_sha!r} is not a SHA-256")
    header: dict[str, Any] = {
        "report_id": read.count(raw, "report_id", at, minimum=1),
        "version": read.count(raw, "version", at, minimum=1),
        "period_start": read.time(raw, "period_start", at),
        "period_end": read.time(raw, "period_end", at),
        "streams": list(streams),
        "status": status,
        "created_at": read.time(raw, "created_at", at),
        "item_count": read.count(raw, "item_count", at),
        "content_sha256": content_sha,
        "repair_of_report_id": None
        if raw.get("repair_of_report_id") is None
        else read.count(raw, "repair_of_report_id", at, minimum=1),
    }
    if header["period_start"] >= header["period_end"]:
        raise read.fail(f"report period {header['period_start']} .. {header['period_end']} is empty")
    for name in _OPTIONAL_TEXT_COLUMNS:
        header[name] = read.optional_text(raw, name, at)
    for name in _JSON_OBJECT_COLUMNS:
        header[name] = dict(read.typed(raw, name, dict, at))
    return header


def _total(read: _Reader, raw: Any, at: str) -> dict[str, Any]:
    record = read.exact_fields(raw, drift.TOTAL_FIELDS, at)
    total: dict[str, Any] = {
        name: read.typed(record, name, str, at) for name in ("stream", "status", "metric")
    }
    total["currency_code"] = read.currency(record, "currency_code", at)
    for name in ("saas_count", "erp_count"):
        total[name] = read.count(record, name, at)
    for name in ("saas_sum", "erp_sum", "difference", "tolerance_abs"):
        total[name] = read.money(record, name, at)
    total["tolerance_rel"] = read.decimal(record, "tolerance_rel", at, 9, TOLERANCE_REL_LIMIT)
    total["within_tolerance"] = read.typed(record, "within_tolerance", bool, at)
    return {name: total[name] for name in drift.TOTAL_FIELDS}


def _item(read: _Reader, raw: Any, at: str) -> dict[str, Any]:
    record = read.exact_fields(raw, drift.ITEM_FIELDS, at)
    kind = read.typed(record, "kind", str, at)
    if kind not in ITEM_KINDS:
        raise read.fail(f"{at}.kind {kind!r} is not one of {sorted(ITEM_KINDS)}")
    item: dict[str, Any] = {
        "item_no": read.count(record, "item_no", at, minimum=1),
        "stream": read.typed(record, "stream", str, at),
        "source_id": read.typed(record, "source_id", str, at),
        "kind": kind,
        "currency_code": read.currency(record, "currency_code", at, optional=True),
        "erp_currency_code": read.currency(record, "erp_currency_code", at, optional=True),
        "erp_batch_id": None
        if record.get("erp_batch_id") is None
        else read.count(record, "erp_batch_id", at),
        "exceeds_tolerance": read.typed(record, "exceeds_tolerance", bool, at),
    }
    for name in ("metric", "saas_status", "erp_status"):
        item[name] = read.optional_text(record, name, at)
    for name in ("saas_amount", "erp_amount", "difference"):
        item[name] = read.optional_money(record, name, at)
    return {name: item[name] for name in drift.ITEM_FIELDS}


def _decoded_list(
    read: _Reader, raw: Any, name: str, decode: Callable[..., dict[str, Any]]
) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise read.fail(f"{name} is not a list")
    return [decode(read, entry, f"{name}[{i}]") for i, entry in enumerate(raw)]


def _check_holds_together(read: _Reader, rows: ReportRows) -> None:
    numbers = [item["item_no"] for item in rows.items]
    if numbers != list(range(1, len(numbers) + 1)):
        raise read.fail("items are not numbered 1..n in order")
    if rows.header["item_count"] != len(rows.items):
        raise read.fail(
            f"report.item_count is {rows.header['item_count']}, the file has {len(rows.items)} items"
        )
    keys = [(t["stream"], t["currency_code"], t["status"], t["metric"]) for t in rows.totals]
    if len(set(keys)) != len(keys):
        raise read.fail("a total (stream, currency, status, metric) is listed twice")
    recomputed = content_sha256(rows)
    if recomputed != rows.header["content_sha256"]:
        raise read.fail(
            f"its totals and items hash to {recomputed}, the report says {rows.header['content_sha256']}"
        )


def content_sha256(rows: ReportRows) -> str:
    """The report's content hash over these rows, as `store.drift.verify_report` computes it."""
    head = dict(rows.header)
    head["period_start"] = rows.header["period_start"].isoformat()
    head["period_end"] = rows.header["period_end"].isoformat()
    return drift.content_sha256(
        head, [drift.total_record(t) for t in rows.totals], (drift.item_record(i) for i in rows.items)
    )


def decode_report(data: bytes, where: str) -> ReportRows:
    """The rows of the report JSON read from `where`; `ReportDocumentError` on anything amiss."""
    read = _Reader(where)
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise read.fail(f"not JSON ({exc})") from exc
    if not isinstance(document, dict) or not {"report", "totals", "items"} <= document.keys():
        raise read.fail("not a drift report (no report, totals and items)")
    rows = ReportRows(
        header=_header(read, document["report"]),
        totals=_decoded_list(read, document["totals"], "totals", _total),
        items=_decoded_list(read, document["items"], "items", _item),
    )
    _check_holds_together(read, rows)
    return rows


def check_matches_manifest(rows: ReportRows, manifest: ReportManifest) -> None:
    """The JSON must be the report its sidecar names: identity, period, status, counts and hash."""
    header = rows.header
    pairs = {
        "report_id": (header["report_id"], manifest.report_id),
        "version": (header["version"], manifest.version),
        "period_start": (header["period_start"], manifest.period_start),
        "period_end": (header["period_end"], manifest.period_end),
        "streams": (tuple(header["streams"]), manifest.streams),
        "status": (header["status"], manifest.status),
        "created_at": (header["created_at"], manifest.created_at),
        "dag_id": (header["dag_id"], manifest.dag_id),
        "run_id": (header["run_id"], manifest.run_id),
        "item_count": (header["item_count"], manifest.item_count),
        "content_sha256": (header["content_sha256"], manifest.content_sha256),
    }
    differ = [
        f"{name} {found!r} (manifest: {listed!r})"
        for name, (found, listed) in pairs.items()
        if found != listed
    ]
    if differ:
        raise ReportDocumentError(
            f"{manifest.files['json'].path}: is not the report its manifest {manifest.where} names: "
            + "; ".join(differ)
        )
