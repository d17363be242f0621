"""Unit tests of the reconcile DAG's parameters and scheduled periods (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from erp_sync.core.params import InvalidParamError
from erp_sync.reconcile_run import (
    DEFAULT_LOOKUP_MISSING_LIMIT,
    EPOCH,
    conf_from_params,
    parse_request,
    periods_for_run,
    scheduled_periods,
)

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


def test_end_before_start_is_refused_naming_both_values():
    with pytest.raises(InvalidParamError) as caught:
        parse_request({"period_start": "2026-11-10T00:00:00Z", "period_end": "2026-11-01T00:00:00Z"}, now=NOW)
    message = str(caught.value)
    assert "period_end" in message and "period_start" in message
    assert "2026-11-01T00:00:00+00:00" in message and "2026-11-10T00:00:00+00:00" in message


def test_manual_run_without_a_period_covers_everything_up_to_now():
    request = parse_request({}, now=NOW)
    assert (request.period_start, request.period_end) == (EPOCH, NOW)
    assert request.streams == ("charges", "credit_notes", "invoices")
    assert request.repair is False


def test_equal_start_and_end_is_an_empty_period_not_an_error():
    request = parse_request(
        {"period_start": "2026-11-01T00:00:00Z", "period_end": "2026-11-01T00:00:00Z"}, now=NOW
    )
    assert request.period_start == request.period_end


@pytest.mark.parametrize(
    ("conf", "name"),
    [
        ({"period_start": "2026-11-01"}, "period_start"),  # no timezone
        ({"period_end": "yesterday"}, "period_end"),
        ({"streams": ["nope"]}, "streams"),
        ({"streams": ["customers"]}, "streams"),  # nothing to reconcile in customers
        ({"tolerances": {"invoices": {"abs_minor": -2}}}, "tolerances"),
        ({"repair": "yes"}, "repair"),
        ({"bogus": 1}, "bogus"),
        ({"saas_lookback_days": -1}, "saas_lookback_days"),
        ({"lookup_missing_limit": -5}, "lookup_missing_limit"),
        ({"lookup_missing_limit": "all"}, "lookup_missing_limit"),
        ({"lookup_missing_limit": True}, "lookup_missing_limit"),
    ],
)
def test_bad_parameters_name_the_parameter(conf, name):
    with pytest.raises(InvalidParamError) as caught:
        parse_request(conf, now=NOW)
    assert caught.value.name == name


def test_tolerances_and_repair_are_parsed():
    request = parse_request(
        {"tolerances": {"invoices:JPY": {"abs_minor": 5}}, "repair": True, "streams": "invoices"}, now=NOW
    )
    assert request.repair and request.streams == ("invoices",)
    assert request.tolerances.for_("invoices", "JPY").abs_minor == 5
    assert request.tolerances.for_("invoices", "USD").abs_minor == 0


def test_scheduled_run_reconciles_the_sync_window_and_month_to_date():
    start = datetime(2026, 11, 25, 2, tzinfo=UTC)
    end = datetime(2026, 11, 26, 2, tzinfo=UTC)
    assert scheduled_periods(start, end) == [(start, end), (datetime(2026, 11, 1, tzinfo=UTC), end)]


def test_scheduled_window_equal_to_month_to_date_is_reconciled_once():
    start = datetime(2026, 11, 1, tzinfo=UTC)
    end = datetime(2026, 11, 2, tzinfo=UTC)
    assert scheduled_periods(start, end) == [(start, end)]


def test_asset_triggered_run_reconciles_the_sync_window_and_month_to_date():
    window = (datetime(2026, 11, 25, 2, tzinfo=UTC), datetime(2026, 11, 26, 2, tzinfo=UTC))
    requests = periods_for_run({}, now=NOW, scheduled_window=window, asset_triggered=True)
    assert [(r.period_start, r.period_end) for r in requests] == [
        window,
        (datetime(2026, 11, 1, tzinfo=UTC), window[1]),
    ]


def test_asset_triggered_run_without_a_known_window_reconciles_month_to_date():
    requests = periods_for_run({}, now=NOW, scheduled_window=None, asset_triggered=True)
    assert [(r.period_start, r.period_end) for r in requests] == [(datetime(2026, 11, 1, tzinfo=UTC), NOW)]


def test_manual_run_uses_its_period_even_when_an_asset_also_triggered_it():
    conf = {"period_start": "2026-10-01T00:00:00Z", "period_end": "2026-10-02T00:00:00Z"}
    requests = periods_for_run(conf, now=NOW, scheduled_window=None, asset_triggered=True)
    assert [(r.period_start, r.period_end) for r in requests] == [
        (datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 2, tzinfo=UTC))
    ]


def test_the_saas_listing_starts_a_day_early_unless_told_otherwise():
    assert parse_request({}, now=NOW).saas_lookback == timedelta(days=1)
    assert parse_request({"saas_lookback_days": 0}, now=NOW).saas_lookback == timedelta(0)
    assert parse_request({"saas_lookback_days": 7}, now=NOW).saas_lookback == timedelta(days=7)


def test_records_only_the_erp_holds_are_looked_up_by_id_up_to_a_limit_that_0_turns_off():
    assert parse_request({}, now=NOW).lookup_missing_limit == DEFAULT_LOOKUP_MISSING_LIMIT == 1_000
    assert parse_request({"lookup_missing_limit": 0}, now=NOW).lookup_missing_limit == 0
    assert conf_from_params({"lookup_missing_limit": 0}) == {"lookup_missing_limit": 0}


def test_params_left_empty_are_not_given_but_a_zero_lookback_is():
    params = {"period_start": None, "streams": [], "tolerances": {}, "repair": False, "saas_lookback_days": 0}
    conf = conf_from_params(params)
    assert conf == {"repair": False, "saas_lookback_days": 0}
    assert parse_request(conf, now=NOW).saas_lookback == timedelta(0)
    assert conf_from_params({}, {"invoices": "SELECT 1"}) == {"erp_sql": {"invoices": "SELECT 1"}}
