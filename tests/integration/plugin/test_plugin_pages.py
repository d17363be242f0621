"""The Drift reports pages and downloads served by a real api-server from a seeded Postgres."""

from __future__ import annotations

import csv
import io
import json
import re
from decimal import Decimal

import httpx
import psycopg2
import pytest

from tests.browser.airflow_server import AirflowServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def client(airflow_server: AirflowServer):
    token = airflow_server.token("auditor")
    with httpx.Client(
        base_url=airflow_server.base_url + "/drift-reports",
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    ) as c:
        yield c


def _listed_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr data-report-id="(\d+)">', html)]


def _db_rows(dsn: str, sql: str, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def test_list_shows_every_report_newest_first(client: httpx.Client, airflow_server: AirflowServer) -> None:
    html = client.get("/").text
    expected = [
        r[0]
        for r in _db_rows(
            airflow_server.pg_dsn, "SELECT report_id FROM erp_sync.drift_reports ORDER BY created_at DESC"
        )
    ]
    assert _listed_ids(html) == expected
    assert len(expected) == len(airflow_server.seeded.reports)
    for status in ("OK", "DRIFT", "ERROR"):
        assert f'<span class="badge {status}">{status}</span>' in html


def test_list_filters_by_status_stream_and_period(
    client: httpx.Client, airflow_server: AirflowServer
) -> None:
    seeded = airflow_server.seeded
    drift_ids = {r.report_id for r in seeded.by_status("DRIFT")}
    assert set(_listed_ids(client.get("/", params={"status": "DRIFT"}).text)) == drift_ids

    assert _listed_ids(client.get("/", params={"stream": "no_such_stream"}).text) == []
    assert len(_listed_ids(client.get("/", params={"stream": "charges"}).text)) == len(seeded.reports)

    day = seeded.reports[1].period_start.date()
    one_day = client.get("/", params={"period_from": day.isoformat(), "period_to": day.isoformat()}).text
    assert _listed_ids(one_day) == [seeded.reports[1].report_id]

    assert client.get("/", params={"status": "BOGUS"}).status_code == 400
    assert client.get("/", params={"period_from": "yesterday"}).status_code == 400


def test_trend_chart_has_a_panel_per_currency_and_a_point_per_report(client: httpx.Client) -> None:
    html = client.get("/").text
    for currency in ("USD", "JPY", "KWD"):
        svg = re.search(rf'<svg class="trend" id="trend-{currency}".*?</svg>', html, re.S)
        assert svg, f"no chart for {currency}"
        # two streams, five non-ERROR reports each
        assert len(re.findall(r'<circle class="pt"', svg.group(0))) == 2 * 5
        assert svg.group(0).count("<polyline") == 2


def test_operations_panel_counts_pending_queues(client: httpx.Client, airflow_server: AirflowServer) -> None:
    html = client.get("/").text
    seeded = airflow_server.seeded

    def count(name: str) -> int:
        block = re.search(
            rf'data-queue="{re.escape(name)}">.*?<td class="num count">([\d,]+)</td>', html, re.S
        )
        assert block, name
        return int(block.group(1).replace(",", ""))

    assert count("Rejections awaiting replay") == seeded.pending_rejections
    assert count("Raw pages awaiting backup") == seeded.pending_outbox
    assert count("Staging ar_invoices pending import") == seeded.pending_staging["ar_invoices"]
    assert count("Staging customers pending import") == 0
    rejections = re.search(r'data-queue="Rejections awaiting replay">.*?</tr>', html, re.S).group(0)
    assert '<td class="num age">1d 2h</td>' in rejections  # the oldest pending rejection is 26 hours old


def test_report_page_shows_totals_provenance_and_first_page(
    client: httpx.Client, airflow_server: AirflowServer
) -> None:
    report = airflow_server.seeded.by_status("DRIFT")[0]
    html = client.get(f"/reports/{report.report_id}").text
    assert report.content_sha256 in html
    assert report.backup_path and report.backup_path in html
    totals = _db_rows(
        airflow_server.pg_dsn,
        "SELECT count(*) FROM erp_sync.drift_report_totals WHERE report_id = %s",
        (report.report_id,),
    )[0][0]
    table = re.search(r'<table id="totals">.*?</table>', html, re.S).group(0)
    assert table.count("<tr>") - 1 == totals  # minus the header row
    assert 'id="conservation"' in html and '<span class="badge OK">yes</span>' in html
    items = re.findall(r'<tr data-item-no="(\d+)">', html)
    assert [int(n) for n in items] == list(range(1, report.item_count + 1))


def test_ten_thousand_items_are_paginated(client: httpx.Client, airflow_server: AirflowServer) -> None:
    big = airflow_server.seeded.big
    assert big.item_count == 10_000
    html = client.get(f"/reports/{big.report_id}", params={"page": 2}).text
    numbers = [int(n) for n in re.findall(r'<tr data-item-no="(\d+)">', html)]
    assert numbers == list(range(101, 201))
    assert "items 101\u2013200 of 10,000" in html
    last = client.get(f"/reports/{big.report_id}", params={"page": 100, "per_page": 100}).text
    assert [int(n) for n in re.findall(r'<tr data-item-no="(\d+)">', last)][-1] == 10_000
    assert client.get(f"/reports/{big.report_id}", params={"per_page": 100_000}).status_code == 422


def test_items_filter_by_kind_and_stream(client: httpx.Client, airflow_server: AirflowServer) -> None:
    big = airflow_server.seeded.big
    html = client.get(
        f"/reports/{big.report_id}", params={"kind": "amount_mismatch", "stream": "charges", "per_page": 1000}
    ).text
    expected = _db_rows(
        airflow_server.pg_dsn,
        "SELECT count(*) FROM erp_sync.drift_report_items WHERE report_id = %s AND kind = 'amount_mismatch'"
        " AND stream = 'charges'",
        (big.report_id,),
    )[0][0]
    assert expected > 0
    assert f"{expected:,} matching" in html
    assert html.count('<span class="badge kind">amount_mismatch</span>') == min(expected, 1000)
    assert "missing_in_erp</span>" not in html


def test_money_is_shown_in_each_currency_minor_units(
    client: httpx.Client, airflow_server: AirflowServer
) -> None:
    report = airflow_server.seeded.by_status("DRIFT")[0]
    html = client.get(f"/reports/{report.report_id}").text
    rows = _db_rows(
        airflow_server.pg_dsn,
        "SELECT item_no, currency_code, saas_amount FROM erp_sync.drift_report_items"
        " WHERE report_id = %s AND saas_amount IS NOT NULL ORDER BY item_no",
        (report.report_id,),
    )
    for item_no, currency, saas in rows:
        row = re.search(rf'<tr data-item-no="{item_no}">.*?</tr>', html, re.S).group(0)
        places = {"JPY": 0, "KWD": 3}.get(currency, 2)
        assert f"{saas.quantize(Decimal(1).scaleb(-places)):,.{places}f}" in row


def test_csv_download_matches_the_database_exactly(
    client: httpx.Client, airflow_server: AirflowServer
) -> None:
    big = airflow_server.seeded.big
    resp = client.get(f"/reports/{big.report_id}/items.csv")
    assert resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    db = _db_rows(
        airflow_server.pg_dsn,
        "SELECT item_no, source_id, kind, currency_code, saas_amount, erp_amount, difference, erp_batch_id"
        " FROM erp_sync.drift_report_items WHERE report_id = %s ORDER BY item_no",
        (big.report_id,),
    )
    assert len(rows) == len(db) == 10_000

    def dec(text: str) -> Decimal | None:
        return Decimal(text) if text else None

    for row, (item_no, source_id, kind, currency, saas, erp, diff, batch) in zip(rows, db, strict=True):
        assert int(row["item_no"]) == item_no and row["source_id"] == source_id and row["kind"] == kind
        assert row["currency_code"] == currency
        assert (dec(row["saas_amount"]), dec(row["erp_amount"]), dec(row["difference"])) == (saas, erp, diff)
        assert (int(row["erp_batch_id"]) if row["erp_batch_id"] else None) == batch


def test_json_download_is_the_whole_report_with_money_as_strings(
    client: httpx.Client, airflow_server: AirflowServer
) -> None:
    report = airflow_server.seeded.by_status("DRIFT")[0]
    doc = json.loads(client.get(f"/reports/{report.report_id}/report.json").text)
    assert doc["report"]["report_id"] == report.report_id
    assert doc["report"]["content_sha256"] == report.content_sha256
    assert len(doc["items"]) == report.item_count
    assert [i["item_no"] for i in doc["items"]] == list(range(1, report.item_count + 1))
    assert all(isinstance(t["saas_sum"], str) for t in doc["totals"])
    first = doc["items"][0]
    db_saas = _db_rows(
        airflow_server.pg_dsn,
        "SELECT saas_amount FROM erp_sync.drift_report_items WHERE report_id = %s AND item_no = 1",
        (report.report_id,),
    )[0][0]
    assert first["saas_amount"] == (str(db_saas) if db_saas is not None else None)


def test_content_hash_of_every_seeded_report_verifies(
    client: httpx.Client, airflow_server: AirflowServer
) -> None:
    for report in airflow_server.seeded.reports:
        body = client.get(f"/reports/{report.report_id}/verify").json()
        assert body == {
            "report_id": report.report_id,
            "content_sha256": report.content_sha256,
            "verified": True,
        }


def test_report_page_shows_tolerances_sources_and_item_flags(
    client: httpx.Client, airflow_server: AirflowServer
) -> None:
    report = airflow_server.seeded.by_status("DRIFT")[0]
    html = client.get(f"/reports/{report.report_id}").text
    assert "Tolerances" in html and "Sources" in html and "GET /v1/charges" in html
    assert f'data-url="/drift-reports/reports/{report.report_id}/verify"' in html
    beyond = _db_rows(
        airflow_server.pg_dsn,
        "SELECT count(*) FROM erp_sync.drift_report_items WHERE report_id = %s AND exceeds_tolerance",
        (report.report_id,),
    )[0][0]
    items_table = re.search(r'<table id="items">.*?</table>', html, re.S).group(0)
    assert items_table.count('<span class="badge DRIFT">yes</span>') == beyond


def test_missing_report_is_404_on_every_report_route(client: httpx.Client) -> None:
    for path in (
        "/reports/999999",
        "/reports/999999/items.csv",
        "/reports/999999/report.json",
        "/reports/999999/verify",
    ):
        assert client.get(path).status_code == 404, path


def test_error_report_shows_its_error(client: httpx.Client, airflow_server: AirflowServer) -> None:
    report = airflow_server.seeded.by_status("ERROR")[0]
    html = client.get(f"/reports/{report.report_id}").text
    assert "The reconciliation failed: SaaS re-read failed: HTTP 503" in html
    assert "not backed up yet" in html
