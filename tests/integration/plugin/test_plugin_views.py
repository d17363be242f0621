"""Unit tests of the plugin's pure helpers (formatting, paging, chart geometry) and the link URL.

No services: these are pure functions, kept next to the plugin's other tests.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from erp_sync.operators.links import DriftReportLink, report_url


@pytest.fixture(scope="module")
def views():
    from drift_reports import views

    return views


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (Decimal("1234.5"), "USD", "1,234.50"),
        (Decimal("1234"), "JPY", "1,234"),
        (Decimal("1.5"), "KWD", "1.500"),
        (Decimal("-0.001"), "KWD", "-0.001"),
        (Decimal("12.345"), "USD", "12.345"),  # finer than the minor unit: never rounded away
        (Decimal("100.500"), "JPY", "100.5"),
        (None, "USD", "—"),
    ],
)
def test_format_money_uses_each_currencys_minor_units(views, amount, currency, expected) -> None:
    assert views.format_money(amount, currency) == expected


def test_format_money_signs_only_when_asked(views) -> None:
    assert views.format_money(Decimal("3"), "USD", signed=True) == "+3.00"
    assert views.format_money(Decimal("-3"), "USD", signed=True) == "-3.00"
    assert views.format_money(Decimal("0"), "USD", signed=True) == "0.00"
    assert views.format_money(Decimal("3"), "USD") == "3.00"


def test_format_count_is_whole_numbers(views) -> None:
    assert views.format_count(Decimal("1204.000")) == "1,204"
    assert views.format_count(Decimal("-4"), signed=True) == "-4"
    assert views.format_count(Decimal("3"), signed=True) == "+3"
    assert views.format_count(0, signed=True) == "0"


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (Decimal("3004000000"), "+3.00B"),
        (Decimal("-1816200"), "-1.82M"),
        (Decimal("12345"), "+12.3k"),
        (Decimal("950"), "+950"),
        (Decimal("-0.5"), "-0.50"),
        (Decimal("0"), "0"),
    ],
)
def test_format_compact_axis_labels(views, amount, expected) -> None:
    assert views.format_compact(amount) == expected


def test_plain_renders_json_figures_without_braces(views) -> None:
    assert (
        views.plain({"JPY": {"abs": "1", "rel": "0.00001"}, "ids": [1, 2]})
        == "JPY (abs 1, rel 0.00001); ids 1, 2"
    )
    assert views.plain({"a": 1, "b": "x"}) == "a 1, b x"
    assert views.plain(3) == "3"


def test_csv_cells_defuse_spreadsheet_formulas_but_keep_numbers() -> None:
    from drift_reports.app import csv_cell

    assert csv_cell('=HYPERLINK("http://x")') == '\'=HYPERLINK("http://x")'
    assert csv_cell("@SUM(A1)") == "'@SUM(A1)"
    assert csv_cell("ch_123") == "ch_123"
    assert csv_cell(Decimal("-12.340")) == Decimal("-12.340")
    assert csv_cell(None) == ""


def test_format_age(views) -> None:
    now = datetime(2026, 11, 26, 12, tzinfo=UTC)
    assert views.format_age(None, now) == "—"
    assert views.format_age(now - timedelta(hours=26, minutes=5), now) == "1d 2h"
    assert views.format_age(now - timedelta(hours=3, minutes=6), now) == "3h 6m"
    assert views.format_age(now - timedelta(seconds=40), now) == "40s"
    assert views.format_age(now + timedelta(seconds=5), now) == "0s"  # clock skew never goes negative


def test_pager_clamps_and_windows(views) -> None:
    pager = views.make_pager(page=250, per_page=100, total=10_000)
    assert (pager.page, pager.pages, pager.offset) == (100, 100, 9_900)
    assert (pager.first_item, pager.last_item) == (9_901, 10_000)
    assert views.make_pager(page=5, per_page=100, total=10_000).window(radius=2) == [1, 3, 4, 5, 6, 7, 100]
    empty = views.make_pager(page=1, per_page=100, total=0)
    assert (empty.pages, empty.first_item, empty.last_item) == (1, 0, 0)


def _point(views, day: int, stream: str, currency: str, diff: str, status: str = "DRIFT"):
    from drift_reports.data import TrendPoint

    return TrendPoint(
        report_id=day,
        period_start=datetime(2026, 11, day, tzinfo=UTC),
        stream=stream,
        currency_code=currency,
        difference=Decimal(diff),
        status=status,
    )


def test_trend_charts_one_panel_per_currency_with_zero_line_inside(views) -> None:
    points = [
        _point(views, 1, "charges", "USD", "0", "OK"),
        _point(views, 2, "charges", "USD", "-10.50"),
        _point(views, 3, "charges", "USD", "4"),
        _point(views, 1, "invoices", "USD", "2"),
        _point(views, 2, "charges", "JPY", "100"),
    ]
    panels = views.build_trend_charts(points, width=500, height=200)
    assert [p.currency for p in panels] == ["JPY", "USD"]
    usd = panels[1]
    assert [s.stream for s in usd.series] == ["charges", "invoices"]
    charges = usd.series[0]
    assert len(charges.points) == 3
    ys = [p.y for p in charges.points]
    # SVG y grows downwards: the negative drift is lowest, zero sits between the extremes
    assert ys[1] > usd.zero_y > ys[2]
    assert ys[0] == usd.zero_y
    xs = [p.x for p in charges.points]
    assert xs == sorted(xs) and xs[0] == usd.plot_left and xs[-1] == usd.plot_right
    assert "-10.50" in charges.points[1].label and "report 2" in charges.points[1].label
    assert all(isinstance(v, Decimal) for p in charges.points for v in (p.x, p.y))
    assert views.chart_legend(panels) == [("charges", charges.colour), ("invoices", usd.series[1].colour)]


def test_trend_charts_empty_and_flat(views) -> None:
    assert views.build_trend_charts([]) == []
    flat = views.build_trend_charts([_point(views, 1, "charges", "EUR", "0", "OK")])
    assert len(flat) == 1 and flat[0].series[0].points[0].y == flat[0].zero_y


def test_conservation_table_from_nested_and_flat_json(views) -> None:
    nested = {
        "charges": {
            "extracted": 10,
            "loaded_new": 6,
            "loaded_changed": 1,
            "skipped_unchanged": 2,
            "rejected": 1,
        },
        "invoices": {
            "extracted": 5,
            "loaded_new": 5,
            "loaded_changed": 0,
            "skipped_unchanged": 0,
            "rejected": 1,
        },
    }
    columns, rows = views.conservation_rows(nested)
    assert columns == ["extracted", "loaded_new", "loaded_changed", "skipped_unchanged", "rejected"]
    assert [views.conservation_holds(figs, columns) for _, figs in rows] == [True, False]
    flat_columns, flat_rows = views.conservation_rows({"batches": 3})
    assert flat_rows == [("all", [3])]
    assert views.conservation_holds(flat_rows[0][1], flat_columns) is None
    assert views.conservation_rows({}) == ([], [])


def test_conservation_table_from_the_stores_shape(views) -> None:
    stored = {
        "basis": "sync_batches committed in the period",
        "balanced": True,
        "streams": {
            "charges": {
                "rejected": 1,
                "balanced": True,
                "extracted": 4,
                "loaded_new": 3,
                "batches": 2,
                "loaded_changed": 0,
                "skipped_unchanged": 0,
            },
        },
    }
    columns, rows = views.conservation_rows(stored)
    assert columns == [
        "batches",
        "extracted",
        "loaded_new",
        "loaded_changed",
        "skipped_unchanged",
        "rejected",
        "balanced",
    ]
    assert rows == [("charges", [2, 4, 3, 0, 0, 1, True])]
    assert views.conservation_holds(rows[0][1], columns) is True


@pytest.mark.parametrize(
    ("report_id", "base", "expected"),
    [
        (42, "", "/drift-reports/reports/42"),
        ("42", "https://airflow.example.test/", "https://airflow.example.test/drift-reports/reports/42"),
        (7, "https://h/airflow", "https://h/airflow/drift-reports/reports/7"),
        (None, "https://h", ""),
        ("not-a-number", "", ""),
        (0, "", ""),
        (True, "", ""),
    ],
)
def test_report_url(report_id, base, expected) -> None:
    assert report_url(report_id, base) == expected


def test_drift_report_link_is_named_for_the_grid_button() -> None:
    assert DriftReportLink().name == "Drift report"
