"""Unit tests of the pure reconcile core: totals, record diff, tolerances, exactness."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from erp_sync.core.reconcile import (
    SideBuilder,
    Tolerance,
    ToleranceConfig,
    currency_exponent,
    from_scaled,
    reconcile,
    to_scaled,
)

METRICS = {"invoices": ("total_amount",), "charges": ("amount", "amount_refunded")}


def _inv(source_id: str, currency: str, status: str, amount: str, batch: int | None = None) -> dict:
    row = {
        "stream": "invoices",
        "source_id": source_id,
        "currency_code": currency,
        "status": status,
        "total_amount": Decimal(amount),
    }
    if batch is not None:
        row["sync_batch_id"] = batch
    return row


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["stream", "source_id"])


def test_currency_exponents_follow_iso_4217():
    assert (currency_exponent("JPY"), currency_exponent("usd"), currency_exponent("KWD")) == (0, 2, 3)


def test_scaled_amounts_are_exact_and_refuse_finer_precision():
    assert to_scaled(Decimal("12.345")) == 12345
    assert to_scaled(Decimal("-0.001")) == -1
    assert from_scaled(12345) == Decimal("12.345")
    # 0.1 + 0.2 style sums stay exact
    assert sum(to_scaled(Decimal("0.1")) for _ in range(3)) == to_scaled(Decimal("0.3"))
    with pytest.raises(ValueError, match="more than 3 decimal places"):
        to_scaled(Decimal("1.0001"))


def test_identical_sides_are_ok_with_no_items():
    rows = [_inv("in_1", "USD", "paid", "10.00"), _inv("in_2", "JPY", "open", "500")]
    erp = [dict(r, sync_batch_id=7) for r in rows]
    result = reconcile(_frame(rows), _frame(erp), {"invoices": ("total_amount",)})
    assert result.status == "OK"
    assert len(result.items) == 0
    assert all(line.within_tolerance for line in result.totals)
    assert {(t.currency_code, t.metric, t.saas_count) for t in result.totals} == {
        ("USD", "count", 1),
        ("USD", "total_amount", 1),
        ("JPY", "count", 1),
        ("JPY", "total_amount", 1),
    }


def test_every_kind_of_drift_is_listed_with_both_sides_and_the_erp_batch():
    saas = [
        _inv("in_missing", "USD", "paid", "10.00"),
        _inv("in_amount", "KWD", "paid", "1.234"),
        _inv("in_status", "JPY", "open", "500"),
        _inv("in_same", "USD", "paid", "3.00"),
    ]
    erp = [
        _inv("in_amount", "KWD", "paid", "1.235", batch=11),
        _inv("in_status", "JPY", "paid", "500", batch=12),
        _inv("in_same", "USD", "paid", "3.00", batch=13),
        _inv("in_extra", "USD", "paid", "9.99", batch=14),
    ]
    result = reconcile(_frame(saas), _frame(erp), {"invoices": ("total_amount",)})
    assert result.status == "DRIFT"
    items = result.items.set_index(["source_id", "kind"])
    assert sorted(items.index) == sorted(
        [
            ("in_missing", "missing_in_erp"),
            ("in_amount", "amount_mismatch"),
            ("in_status", "status_mismatch"),
            ("in_extra", "missing_in_saas"),
        ]
    )
    amount = items.loc[("in_amount", "amount_mismatch")]
    assert (amount["saas_amount"], amount["erp_amount"], amount["difference"]) == (1234, 1235, 1)
    assert amount["erp_batch_id"] == 11 and amount["metric"] == "total_amount"
    status = items.loc[("in_status", "status_mismatch")]
    assert (status["saas_status"], status["erp_status"], status["erp_batch_id"]) == ("open", "paid", 12)
    missing = items.loc[("in_missing", "missing_in_erp")]
    assert missing["difference"] == -10000 and pd.isna(missing["erp_batch_id"])
    extra = items.loc[("in_extra", "missing_in_saas")]
    assert extra["erp_amount"] == 9990 and extra["erp_batch_id"] == 14 and pd.isna(extra["saas_status"])
    assert result.item_counts() == {
        "missing_in_erp": 1,
        "missing_in_saas": 1,
        "amount_mismatch": 1,
        "status_mismatch": 1,
    }


def test_per_currency_totals_are_exact_to_the_minor_unit():
    saas = [
        _inv("a", "USD", "paid", "0.10"),
        _inv("b", "JPY", "paid", "1"),
        _inv("c", "KWD", "paid", "0.001"),
    ]
    erp = [
        _inv("a", "USD", "paid", "0.11", 1),
        _inv("b", "JPY", "paid", "2", 1),
        _inv("c", "KWD", "paid", "0.002", 1),
    ]
    result = reconcile(_frame(saas), _frame(erp), {"invoices": ("total_amount",)})
    diffs = {t.currency_code: t.difference for t in result.totals if t.metric == "total_amount"}
    assert diffs == {"USD": Decimal("0.010"), "JPY": Decimal("1.000"), "KWD": Decimal("0.001")}
    assert all(isinstance(t.saas_sum, Decimal) for t in result.totals)


def test_status_mismatch_moves_counts_between_status_groups():
    result = reconcile(
        _frame([_inv("a", "USD", "open", "5.00")]),
        _frame([_inv("a", "USD", "paid", "5.00", 3)]),
        {"invoices": ("total_amount",)},
    )
    counts = {(t.status, t.metric): (t.saas_count, t.erp_count) for t in result.totals}
    assert counts[("open", "count")] == (1, 0)
    assert counts[("paid", "count")] == (0, 1)


def test_receipts_compare_amount_and_refunded_separately():
    saas = pd.DataFrame(
        [
            {
                "stream": "charges",
                "source_id": "ch_1",
                "currency_code": "USD",
                "status": "succeeded",
                "amount": Decimal("10.00"),
                "amount_refunded": Decimal("0.00"),
            },
        ]
    )
    erp = saas.assign(amount_refunded=[Decimal("2.50")], sync_batch_id=[4])
    result = reconcile(saas, erp, {"charges": ("amount", "amount_refunded")})
    items = result.items
    assert list(items["kind"]) == ["amount_mismatch"]
    assert list(items["metric"]) == ["amount_refunded"]
    assert items.loc[0, "difference"] == 2500


def test_absolute_tolerance_is_in_minor_units_of_each_currency():
    saas = [_inv("a", "USD", "paid", "1.00"), _inv("b", "JPY", "paid", "100")]
    erp = [_inv("a", "USD", "paid", "1.01", 1), _inv("b", "JPY", "paid", "101", 1)]
    tol = ToleranceConfig(default=Tolerance(abs_minor=1))
    result = reconcile(_frame(saas), _frame(erp), {"invoices": ("total_amount",)}, tol)
    assert result.status == "OK"  # one cent and one yen are each one minor unit
    assert len(result.items) == 2  # still listed: exact diff, just within tolerance
    assert not result.items["exceeds_tolerance"].any()
    usd = next(t for t in result.totals if t.currency_code == "USD" and t.metric == "total_amount")
    assert usd.tolerance_abs == Decimal("0.010")


def test_relative_tolerance_is_exact_fraction_of_the_saas_sum():
    saas = [_inv("a", "USD", "paid", "1000.00")]
    erp = [_inv("a", "USD", "paid", "1001.00", 1)]
    at_limit = ToleranceConfig.from_mapping({"invoices": {"rel": "0.001"}})
    assert reconcile(_frame(saas), _frame(erp), METRICS_INV, at_limit).status == "OK"
    below = ToleranceConfig.from_mapping({"invoices": {"rel": "0.000999"}})
    assert reconcile(_frame(saas), _frame(erp), METRICS_INV, below).status == "DRIFT"


METRICS_INV = {"invoices": ("total_amount",)}


def test_missing_records_exceed_any_amount_tolerance():
    tol = ToleranceConfig(default=Tolerance(abs_minor=10**6))
    result = reconcile(_frame([_inv("a", "USD", "paid", "0.01")]), _frame([]), METRICS_INV, tol)
    assert result.status == "DRIFT"
    assert list(result.items["kind"]) == ["missing_in_erp"]


def test_tolerance_lookup_prefers_stream_currency_then_stream_then_default():
    cfg = ToleranceConfig.from_mapping(
        {"default": {"abs_minor": 1}, "invoices": {"abs_minor": 2}, "invoices:jpy": {"abs_minor": 3}}
    )
    assert cfg.for_("invoices", "JPY").abs_minor == 3
    assert cfg.for_("invoices", "USD").abs_minor == 2
    assert cfg.for_("charges", "USD").abs_minor == 1


@pytest.mark.parametrize(
    "raw",
    [
        {"invoices": {"abs_minor": -1}},
        {"invoices": {"abs_minor": 1.5}},
        {"invoices": {"rel": "-1"}},
        {"invoices": {"bogus": 1}},
        {"invoices": 3},
    ],
)
def test_bad_tolerances_are_refused_with_the_key(raw):
    with pytest.raises(ValueError, match="invoices"):
        ToleranceConfig.from_mapping(raw)


def test_empty_period_is_ok_with_zero_counts():
    result = reconcile(_frame([]), _frame([]), METRICS)
    assert result.status == "OK"
    assert result.totals == []
    assert len(result.items) == 0
    assert [s.saas_records for s in result.streams] == [0, 0]


def test_side_builder_keeps_the_last_copy_of_a_key_and_stays_integer():
    builder = SideBuilder(stream="invoices", metrics=("total_amount",), with_batch_id=True)
    builder.add(pd.DataFrame([_inv("a", "USD", "paid", "1.00", 1)]))
    builder.add(pd.DataFrame([_inv("a", "USD", "paid", "2.00", 2)]))
    frame = builder.frame()
    assert len(frame) == 1
    assert frame["total_amount"].dtype == np.int64 and frame.loc[0, "total_amount"] == 2000
    assert isinstance(frame["status"].dtype, pd.CategoricalDtype)


def test_floats_are_refused_as_amounts():
    bad = pd.DataFrame([{**_inv("a", "USD", "paid", "1.00"), "total_amount": 1.0}])
    with pytest.raises(ValueError, match="Decimal"):
        reconcile(bad, _frame([]), METRICS_INV)


def test_large_amounts_do_not_lose_precision_through_the_outer_merge():
    big = "9999999999999.999"  # beyond float's 2**53 in thousandths
    saas = [_inv("a", "USD", "paid", big), _inv("b", "USD", "paid", "1.00")]
    erp = [_inv("a", "USD", "paid", "9999999999999.998", 1)]
    items = reconcile(_frame(saas), _frame(erp), METRICS_INV).items.set_index("source_id")
    assert items.loc["a", "difference"] == -1
