"""Renderings of a stored drift report: JSON, CSV and one self-contained HTML page.

Input is what `erp_sync.store.drift.get_report` returns (the report row with its totals) and an
iterable of item records (`iter_items`). Every file says how to repair its period. The HTML page
has no external references (inline CSS, no scripts, no fonts, no images) so it can be opened from a
backup years later; every value in it is HTML-escaped.
"""

from __future__ import annotations

import csv
import html
import io
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

DAG_ID = "erp_drift_reconciliation"
ITEM_CSV_FIELDS = (
    "item_no",
    "stream",
    "source_id",
    "kind",
    "metric",
    "currency_code",
    "erp_currency_code",
    "saas_amount",
    "erp_amount",
    "difference",
    "saas_status",
    "erp_status",
    "erp_batch_id",
    "exceeds_tolerance",
)
HTML_ITEM_LIMIT = 10_000


@dataclass(frozen=True)
class RepairCommands:
    make: str
    airflow: str

    def as_text(self) -> str:
        return f"{self.make}\n{self.airflow}"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def repair_commands(period_start: datetime, period_end: datetime, streams: Sequence[str]) -> RepairCommands:
    """How to re-send what a report for this period found missing or mismatched."""
    conf = orjson.dumps(
        {
            "period_start": _iso(period_start),
            "period_end": _iso(period_end),
            "streams": sorted(streams),
            "repair": True,
        }
    ).decode()
    return RepairCommands(
        make=f"make reconcile CONF={shlex.quote(conf)}",
        airflow=f"airflow dags trigger {DAG_ID} --conf {shlex.quote(conf)}",
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _header(report: Mapping[str, Any]) -> dict[str, Any]:
    head = {k: _jsonable(v) for k, v in report.items() if k != "totals"}
    commands = repair_commands(report["period_start"], report["period_end"], report["streams"])
    head["repair"] = {"make": commands.make, "airflow": commands.airflow}
    return head


def render_json(report: Mapping[str, Any], items: Iterable[Mapping[str, Any]]) -> bytes:
    """`{"report": {...}, "totals": [...], "items": [...]}`, amounts as strings (exact decimals)."""
    document = {
        "report": _header(report),
        "totals": [_jsonable(t) for t in report.get("totals", [])],
        "items": [_jsonable(i) for i in items],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def render_csv(report: Mapping[str, Any], items: Iterable[Mapping[str, Any]]) -> bytes:
    """The items, one row each; `#` comment lines first name the report and the repair command."""
    buffer = io.StringIO()
    commands = repair_commands(report["period_start"], report["period_end"], report["streams"])
    buffer.write(
        f"# drift report {report.get('report_id')} v{report.get('version')} "
        f"{_iso(report['period_start'])}..{_iso(report['period_end'])} status {report['status']} "
        f"sha256 {report.get('content_sha256')}\n"
    )
    buffer.write(f"# repair: {commands.make}\n")
    writer = csv.DictWriter(buffer, fieldnames=ITEM_CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for item in items:
        writer.writerow({k: _csv_cell(k, v) for k, v in item.items()})
    return buffer.getvalue().encode()


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMERIC_FIELDS = frozenset({"item_no", "saas_amount", "erp_amount", "difference", "erp_batch_id"})


def csv_cell(value: Any, *, numeric: bool = False) -> Any:
    """A CSV cell: None is empty; text that a spreadsheet would run as a formula (a source id such as
    `=HYPERLINK(...)`) gets a leading apostrophe; numbers, and `numeric` columns written as text,
    are left exact (a negative difference is a number, not a formula). The report file and the UI's
    CSV download both use it."""
    if value is None:
        return ""
    if not numeric and isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _csv_cell(field: str, value: Any) -> Any:
    return csv_cell(value, numeric=field in _NUMERIC_FIELDS)


def render_totals_csv(report: Mapping[str, Any]) -> bytes:
    totals = report.get("totals", [])
    buffer = io.StringIO()
    fields = (
        "stream", "currency_code", "status", "metric", "saas_count", "erp_count", "saas_sum", "erp_sum",
        "difference", "tolerance_abs", "tolerance_rel", "within_tolerance",
    )  # fmt: skip
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for total in totals:
        writer.writerow({k: _jsonable(v) for k, v in total.items()})
    return buffer.getvalue().encode()


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em} table{border-collapse:collapse;margin:1em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.OK{color:#176f2c;font-weight:bold} .DRIFT,.ERROR{color:#b00020;font-weight:bold}
tr.bad td{background:#fdecea} code,pre{background:#f4f4f4;padding:.2em .4em}
"""


def _cell(value: Any, numeric: bool = False) -> str:
    text = "" if value is None else str(_jsonable(value))
    cls = ' class="n"' if numeric else ""
    return f"<td{cls}>{html.escape(text)}</td>"


def render_html(
    report: Mapping[str, Any], items: Iterable[Mapping[str, Any]], *, item_limit: int = HTML_ITEM_LIMIT
) -> bytes:
    """One page: headline, conservation, per-currency totals, items (first `item_limit`), repair."""
    esc = html.escape
    status = str(report["status"])
    commands = repair_commands(report["period_start"], report["period_end"], report["streams"])
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Drift report {esc(str(report.get('report_id')))}</title><style>{_CSS}</style></head><body>",
        f"<h1>Drift report {esc(str(report.get('report_id')))} (version {esc(str(report.get('version')))})"
        f" &mdash; <span class='{esc(status)}'>{esc(status)}</span></h1>",
        "<table>",
    ]
    for label, value in (
        ("Period", f"{_iso(report['period_start'])} .. {_iso(report['period_end'])} (end exclusive)"),
        ("Streams", ", ".join(report["streams"])),
        ("Items", report.get("item_count")),
        ("Run", f"{report.get('dag_id') or ''} {report.get('run_id') or ''}"),
        ("Created", report.get("created_at")),
        ("Content SHA-256", report.get("content_sha256")),
        ("Error", report.get("error_message")),
    ):
        if value not in (None, ""):
            parts.append(f"<tr><th>{esc(label)}</th>{_cell(value)}</tr>")
    parts.append("</table>")

    parts.append("<h2>Totals per stream, currency and status</h2><table><tr>")
    total_cols = ("stream", "currency_code", "status", "metric", "saas_count", "erp_count", "saas_sum",
                  "erp_sum", "difference", "tolerance_abs", "tolerance_rel", "within_tolerance")  # fmt: skip
    parts.extend(f"<th>{esc(c)}</th>" for c in total_cols)
    parts.append("</tr>")
    for total in report.get("totals", []):
        row_cls = "" if total.get("within_tolerance") else " class='bad'"
        cells = "".join(_cell(total.get(c), numeric=c not in total_cols[:4]) for c in total_cols)
        parts.append(f"<tr{row_cls}>{cells}</tr>")
    parts.append("</table>")

    parts.append("<h2>Records</h2><table><tr>")
    parts.extend(f"<th>{esc(c)}</th>" for c in ITEM_CSV_FIELDS)
    parts.append("</tr>")
    numeric = {"item_no", "saas_amount", "erp_amount", "difference", "erp_batch_id"}
    for shown, item in enumerate(items):
        if shown >= item_limit:
            parts.append(
                f"<tr><td colspan='{len(ITEM_CSV_FIELDS)}'>&hellip; more items in the CSV/JSON</td></tr>"
            )
            break
        parts.append("<tr>" + "".join(_cell(item.get(c), c in numeric) for c in ITEM_CSV_FIELDS) + "</tr>")
    parts.append("</table>")

    conservation = report.get("conservation") or {}
    parts.append("<h2>Conservation of the syncs in the period</h2>")
    parts.append(
        f"<pre>{esc(orjson.dumps(_jsonable(conservation), option=orjson.OPT_INDENT_2).decode())}</pre>"
    )
    invariants = report.get("invariants") or {}
    if invariants:
        parts.append("<h2>Table invariants</h2>")
        parts.append(
            f"<pre>{esc(orjson.dumps(_jsonable(invariants), option=orjson.OPT_INDENT_2).decode())}</pre>"
        )
    repaired = (report.get("summary") or {}).get("repair")
    if repaired:  # a re-check after a repair: what it re-sent and tombstoned (ADR 0020)
        parts.append("<h2>What the repair before this report did</h2>")
        repair_json = orjson.dumps(_jsonable(repaired), option=orjson.OPT_INDENT_2).decode()
        parts.append(f"<pre>{esc(repair_json)}</pre>")
    parts.append(
        "<h2>Repair</h2><p>Re-send exactly the records this report found missing in the ERP or mismatched, "
        "and stage as deleted those it found missing in the SaaS that the SaaS answers as gone:</p>"
    )
    parts.append(f"<pre>{esc(commands.make)}\n{esc(commands.airflow)}</pre>")
    parts.append("</body></html>")
    return "".join(parts).encode()


def file_names(report: Mapping[str, Any]) -> dict[str, str]:
    """Plain file names (no directories) for the renderings of one report."""
    base = (
        f"drift-report-{report['report_id']}-v{report['version']}-"
        f"{report['period_start'].astimezone(UTC):%Y%m%dT%H%M%SZ}-{report['period_end'].astimezone(UTC):%Y%m%dT%H%M%SZ}"
    )
    return {
        "json": f"{base}.json",
        "csv": f"{base}.csv",
        "totals_csv": f"{base}-totals.csv",
        "html": f"{base}.html",
    }
