"""Unit tests of the report renderings (pure functions over a report dict and item records)."""

from __future__ import annotations

import csv
import io
import json
import shlex
from datetime import UTC, datetime
from decimal import Decimal

from erp_sync.reports import file_names, render_csv, render_html, render_json, repair_commands

REPORT = {
    "report_id": 7,
    "version": 2,
    "period_start": datetime(2026, 11, 1, tzinfo=UTC),
    "period_end": datetime(2026, 12, 1, tzinfo=UTC),
    "streams": ["invoices", "charges"],
    "status": "DRIFT",
    "item_count": 1,
    "content_sha256": "ab" * 32,
    "created_at": datetime(2026, 12, 1, 3, tzinfo=UTC),
    "conservation": {"balanced": True},
    "totals": [
        {
            "stream": "invoices",
            "currency_code": "KWD",
            "status": "paid",
            "metric": "total_amount",
            "saas_count": 1,
            "erp_count": 1,
            "saas_sum": Decimal("1.234"),
            "erp_sum": Decimal("1.235"),
            "difference": Decimal("0.001"),
            "tolerance_abs": Decimal("0.000"),
            "tolerance_rel": Decimal("0"),
            "within_tolerance": False,
        },
    ],
}
ITEMS = [
    {
        "item_no": 1,
        "stream": "invoices",
        "source_id": "in_<script>alert(1)</script>",
        "kind": "amount_mismatch",
        "metric": "total_amount",
        "currency_code": "KWD",
        "erp_currency_code": "KWD",
        "saas_amount": "1.234",
        "erp_amount": "1.235",
        "difference": "0.001",
        "saas_status": "paid",
        "erp_status": "paid",
        "erp_batch_id": 42,
        "exceeds_tolerance": True,
    },
]


def test_repair_commands_carry_the_period_and_repair_flag():
    commands = repair_commands(REPORT["period_start"], REPORT["period_end"], REPORT["streams"])
    conf = json.loads(shlex.split(commands.make)[2].split("=", 1)[1])
    assert conf == {
        "period_start": "2026-11-01T00:00:00Z",
        "period_end": "2026-12-01T00:00:00Z",
        "streams": ["charges", "invoices"],
        "repair": True,
    }
    argv = shlex.split(commands.airflow)
    assert argv[:4] == ["airflow", "dags", "trigger", "erp_drift_reconciliation"]
    assert json.loads(argv[argv.index("--conf") + 1]) == conf


def test_json_keeps_amounts_exact_and_says_how_to_repair():
    document = json.loads(render_json(REPORT, ITEMS))
    assert document["totals"][0]["difference"] == "0.001"
    assert document["items"][0]["erp_batch_id"] == 42
    assert "make reconcile" in document["report"]["repair"]["make"]


def test_csv_has_one_row_per_item_after_the_comment_lines():
    text = render_csv(REPORT, ITEMS).decode()
    lines = text.splitlines()
    assert lines[0].startswith("# drift report 7 v2") and lines[1].startswith("# repair: make reconcile")
    rows = list(csv.DictReader(io.StringIO("\n".join(lines[2:]))))
    assert len(rows) == 1 and rows[0]["difference"] == "0.001" and rows[0]["kind"] == "amount_mismatch"


def test_html_is_self_contained_and_escaped():
    page = render_html(REPORT, ITEMS).decode()
    assert "<script>" not in page and "&lt;script&gt;" in page
    for external in ("http://", "https://", "src=", "<link", "@import"):
        assert external not in page
    assert "make reconcile" in page and "DRIFT" in page and "0.001" in page


def test_html_of_a_recheck_says_what_the_repair_tombstoned():
    tombstones = {"invoices": {"tombstoned": 2, "tombstoned_ids": ["in_1", "in_<2>"], "batch_id": 9}}
    recheck = {**REPORT, "summary": {"repair": {"of_report": 6, "tombstones": tombstones}}}
    page = render_html(recheck, ITEMS).decode()
    assert "What the repair before this report did" in page
    assert "&quot;tombstoned_ids&quot;" in page and "in_&lt;2&gt;" in page
    assert "What the repair before this report did" not in render_html(REPORT, ITEMS).decode()


def test_html_truncates_items_beyond_the_limit():
    page = render_html(REPORT, ITEMS * 3, item_limit=2).decode()
    assert page.count("amount_mismatch") == 2 and "more items in the CSV/JSON" in page


def test_file_names_are_plain_and_distinct():
    names = file_names(REPORT)
    assert len(set(names.values())) == 4
    assert all("/" not in n for n in names.values())
    assert names["json"] == "drift-report-7-v2-20261101T000000Z-20261201T000000Z.json"


def test_csv_defuses_formulas_in_text_but_keeps_negative_amounts():
    item = {**ITEMS[0], "source_id": '=HYPERLINK("http://x")', "difference": "-0.001"}
    text = render_csv(REPORT, [item]).decode()
    row = next(csv.DictReader(io.StringIO("\n".join(text.splitlines()[2:]))))
    assert row["source_id"] == '\'=HYPERLINK("http://x")'
    assert row["difference"] == "-0.001"
