"""A drift report's backed-up JSON decodes back to its rows, exactly, and its sidecar manifest proves
it (ADR 0025): pure functions, no services. Every refusal names the file and why."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest

from erp_sync.backup.report_document import ReportDocumentError, check_matches_manifest, decode_report
from erp_sync.backup.report_manifest import (
    ReportManifestError,
    build_report_manifest,
    dumps,
    loads,
    manifest_name,
)
from erp_sync.backup.report_restore import ReportSelection, parse_restore_reports
from erp_sync.reports.render import file_names, render_csv, render_html, render_json, render_totals_csv
from erp_sync.store import drift

WHERE = "reports/2026/11/drift-report-7-v2.json"
START = datetime(2026, 11, 1, tzinfo=UTC)
CREATED = datetime(2026, 11, 2, 2, 13, 7, 123456, tzinfo=UTC)


def _totals() -> list[dict[str, Any]]:
    return [
        {
            "stream": "invoices", "currency_code": "USD", "status": "paid", "metric": "total_amount",
            "saas_count": 3, "erp_count": 2, "saas_sum": Decimal("1234.500"), "erp_sum": Decimal("1000.000"),
            "difference": Decimal("-234.500"), "tolerance_abs": Decimal("0.010"),
            "tolerance_rel": Decimal("0.000100000"), "within_tolerance": False,
        },
        {
            "stream": "invoices", "currency_code": "JPY", "status": "paid", "metric": "count",
            "saas_count": 1, "erp_count": 1, "saas_sum": Decimal("0.000"), "erp_sum": Decimal("0.000"),
            "difference": Decimal("0.000"), "tolerance_abs": Decimal("0.000"),
            "tolerance_rel": Decimal("0.000000000"), "within_tolerance": True,
        },
    ]  # fmt: skip


def _items() -> list[dict[str, Any]]:
    return [
        drift.item_record(
            {
                "item_no": 1, "stream": "invoices", "source_id": "in_1", "kind": "missing_in_erp",
                "metric": "total_amount", "currency_code": "USD", "saas_amount": Decimal("234.5"),
                "exceeds_tolerance": True,
            }
        ),
        drift.item_record(
            {
                "item_no": 2, "stream": "invoices", "source_id": "=HYPERLINK(1)", "kind": "amount_mismatch",
                "metric": "total_amount", "currency_code": "USD", "erp_currency_code": "EUR",
                "saas_amount": Decimal("10.001"), "erp_amount": Decimal("10.000"),
                "difference": Decimal("-0.001"), "saas_status": "paid", "erp_status": "open",
                "erp_batch_id": 41, "exceeds_tolerance": False,
            }
        ),
    ]  # fmt: skip


def _report() -> dict[str, Any]:
    """A report as `store.drift.get_report` returns it (after `set_backup_path`'s upload, before it)."""
    head = {
        "period_start": START, "period_end": START + timedelta(days=1), "streams": ["invoices"],
        "status": "DRIFT", "item_count": 2, "summary": {"items": {"missing_in_erp": 1}, "ratio": 0.25},
        "conservation": {"balanced": True, "streams": {}}, "tolerances": {"abs": {"USD": "0.01"}},
        "invariants": {"no_orphan_invoice_lines": True},
    }  # fmt: skip
    hashed = dict(head, period_start=START.isoformat(), period_end=(START + timedelta(days=1)).isoformat())
    sha = drift.content_sha256(hashed, [drift.total_record(t) for t in _totals()], _items())
    return {
        "report_id": 7, "version": 2, **head, "dag_id": "erp_drift_reconciliation",
        "run_id": "scheduled__2026-11-02T02:00:00+00:00", "created_at": CREATED, "content_sha256": sha,
        "backup_path": None, "repair_command": "make reconcile CONF=...", "error_message": None,
        "sources": {"saas": {"invoices": {"listed": 3}}}, "repair_of_report_id": 5, "totals": _totals(),
    }  # fmt: skip


def _json(report: dict[str, Any] | None = None) -> bytes:
    return render_json(report or _report(), _items())


def _edited(edit: Callable[[dict[str, Any]], None]) -> bytes:
    document = orjson.loads(_json())
    edit(document)
    return orjson.dumps(document)


def _sidecar(report: dict[str, Any] | None = None, json_bytes: bytes | None = None) -> dict[str, Any]:
    report = report or _report()
    names = file_names(report)
    data = {
        "json": json_bytes if json_bytes is not None else render_json(report, _items()),
        "csv": render_csv(report, _items()),
        "totals_csv": render_totals_csv(report),
        "html": render_html(report, _items()),
    }
    return build_report_manifest(
        report, {k: (names[k], f"reports/2026/11/{names[k]}", data[k]) for k in names}
    )


def test_the_json_decodes_to_the_rows_as_stored_money_decimal_and_times_aware() -> None:
    rows = decode_report(_json(), WHERE)

    expected = {k: v for k, v in _report().items() if k not in {"totals", "backup_path"}}
    assert rows.header == expected
    assert rows.header["created_at"] == CREATED and rows.header["created_at"].tzinfo is not None
    assert rows.totals == _totals()
    assert all(
        isinstance(t[m], Decimal) for t in rows.totals for m in ("saas_sum", "difference", "tolerance_rel")
    )
    assert [drift.item_record(i) for i in rows.items] == _items()
    assert rows.items[1]["difference"] == Decimal("-0.001") and rows.items[0]["erp_amount"] is None


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda d: d["totals"][0].update(saas_sum="1234.600"), "hash to"),
        (lambda d: d["items"][1].update(erp_amount="10.500"), "hash to"),
        (lambda d: d["report"].update(status="OK"), "hash to"),
        (lambda d: d["items"].pop(), "item_count is 2, the file has 1"),
        (lambda d: d["items"][1].update(item_no=3), "numbered 1..n"),
        (lambda d: d["totals"].append(dict(d["totals"][0])), "listed twice"),
        (lambda d: d["totals"][0].update(saas_sum=1234.5), "not a str"),
        (lambda d: d["totals"][0].update(saas_sum="1234.5001"), "at most 3 decimals"),
        (lambda d: d["items"][0].update(saas_amount="NaN"), "at most 3 decimals"),
        (lambda d: d["report"].update(created_at="2026-11-02T02:13:07"), "has no UTC offset"),
        (lambda d: d["report"].update(report_id="7"), "not a int"),
        (lambda d: d["report"].pop("sources"), "lacks \\['sources'\\]"),
        (lambda d: d["items"][0].update(kind="gone"), "is not one of"),
        (lambda d: d["items"][0].update(colour="red"), "has fields"),
        (lambda d: d["report"].update(period_end=d["report"]["period_start"]), "is empty"),
    ],
)
def test_a_file_that_does_not_hold_together_is_refused_naming_it(
    edit: Callable[[dict[str, Any]], None], problem: str
) -> None:
    with pytest.raises(ReportDocumentError, match=problem) as refused:
        decode_report(_edited(edit), WHERE)
    assert str(refused.value).startswith(f"{WHERE}: ")


def test_not_json_is_refused_naming_the_file() -> None:
    with pytest.raises(ReportDocumentError, match=f"^{WHERE}: not JSON"):
        decode_report(b'{"report": ', WHERE)


def test_the_sidecar_lists_every_file_with_its_size_and_sha256_and_reads_back() -> None:
    report = _report()
    sidecar = _sidecar(report)
    names = file_names(report)

    parsed = loads(dumps(sidecar), "reports/2026/11/x.manifest.json")

    json_bytes = render_json(report, _items())
    assert parsed.files["json"].sha256 == hashlib.sha256(json_bytes).hexdigest()
    assert parsed.files["json"].size == len(json_bytes)
    assert set(parsed.files) == {"json", "csv", "totals_csv", "html"}
    assert parsed.backup_path == f"reports/2026/11/{names['json']}"
    assert (parsed.report_id, parsed.version, parsed.created_at) == (7, 2, CREATED)
    assert manifest_name(names["json"]) == names["json"].removesuffix(".json") + ".manifest.json"
    check_matches_manifest(decode_report(json_bytes, WHERE), parsed)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda d: d.update(format="erp-sync-report-manifest/0"), "not an erp-sync-report-manifest/1"),
        (lambda d: d["files"].pop("html"), "expected"),
        (lambda d: d["files"]["csv"].update(sha256="abc"), "files.csv has size"),
        (lambda d: d.update(created_at="2026-11-02T02:13:07"), "has no UTC offset"),
        (lambda d: d.update(backup_path="reports/2026/11/other.json"), "is not its JSON's path"),
        (lambda d: d.update(report_id=0), "report_id must be at least 1"),
        (lambda d: d.update(status="FINE"), "status 'FINE'"),
    ],
)
def test_a_sidecar_that_is_not_one_is_refused_naming_it(
    edit: Callable[[dict[str, Any]], None], problem: str
) -> None:
    sidecar = _sidecar()
    edit(sidecar)
    with pytest.raises(ReportManifestError, match=problem) as refused:
        loads(dumps(sidecar), "reports/2026/11/x.manifest.json")
    assert str(refused.value).startswith("reports/2026/11/x.manifest.json: ")


def test_a_json_that_is_another_report_than_its_sidecar_names_is_refused() -> None:
    """A file that holds together is not enough: it must be the report its sidecar was written for."""
    other = _report() | {"report_id": 8, "created_at": CREATED + timedelta(seconds=1)}
    parsed = loads(dumps(_sidecar()), "reports/2026/11/x.manifest.json")

    with pytest.raises(ReportDocumentError, match="report_id 8 \\(manifest: 7\\); created_at") as refused:
        check_matches_manifest(decode_report(render_json(other, _items()), WHERE), parsed)
    assert parsed.files["json"].path in str(refused.value)


def _manifest_written(when: datetime, run_id: str = "r1") -> Any:
    report = _report() | {"created_at": when, "run_id": run_id}
    return loads(dumps(_sidecar(report)), "m")


def test_reports_are_selected_by_the_day_they_were_written_or_by_their_run() -> None:
    days = ReportSelection(date_from=date(2026, 11, 2), date_to=date(2026, 11, 3))
    late = datetime(2026, 11, 3, 23, 59, 59, tzinfo=UTC)
    assert days.matches(_manifest_written(datetime(2026, 11, 2, tzinfo=UTC)))
    assert days.matches(_manifest_written(late))
    assert not days.matches(_manifest_written(late + timedelta(seconds=1)))
    # the day is UTC's: 01:00 at +02:00 on the 4th is the 3rd in UTC
    assert days.matches(_manifest_written(datetime(2026, 11, 4, 1, 0, tzinfo=timezone(timedelta(hours=2)))))
    assert ReportSelection(date_from=date(2026, 11, 4)).matches(
        _manifest_written(late + timedelta(seconds=1))
    )
    assert ReportSelection(run_id="r2").matches(_manifest_written(late, run_id="r2"))
    assert not ReportSelection(run_id="r2").matches(_manifest_written(late, run_id="r1"))


def test_the_month_directories_scanned_cover_an_upload_that_crossed_into_the_next_month() -> None:
    days = ReportSelection(date_from=date(2026, 10, 15), date_to=date(2026, 12, 31))
    assert [m for m in range(1, 13) if days.may_hold(2026, m)] == [10, 11, 12]
    assert days.may_hold(2027, 1) and not days.may_hold(2027, 2)
    assert ReportSelection(run_id="r").may_hold(1999, 1)
    assert ReportSelection(date_to=date(2026, 1, 31)).may_hold(2026, 2)


def test_restore_reports_is_a_boolean_defaulting_to_true() -> None:
    assert parse_restore_reports(None) is True
    assert parse_restore_reports(False) is False
    for bad in ("false", 0, "yes"):
        with pytest.raises(ValueError, match="restore_reports must be true or false"):
            parse_restore_reports(bad)
