"""The scale deltas: a run's settled deltas of several sizes say whether the delta's cost grows with
the delta; the same sizes in runs at other N (`bench.scaling`) whether it grows with the table."""

from __future__ import annotations

from typing import Any

import pytest

from bench.report import _rows, targets
from bench.run import default_scale_deltas, keep_median_round, parse_args
from bench.scaling import against_the_table, markdown, scale_deltas

TARGET = "delta cost grows with the delta"


def _stage(seconds: float, records: int) -> dict[str, Any]:
    return {"seconds": seconds, "records": records, "extra": {}}


def _scaled(*deltas: tuple[int, float, int]) -> dict[str, dict[str, Any]]:
    """Raw results of scale deltas given as (mutations, seconds, records), each with a floor."""
    raw: dict[str, dict[str, Any]] = {}
    for mutations, seconds, records in deltas:
        raw[f"delta_scale_{mutations}"] = _stage(seconds, records)
        raw[f"floor_http_delta_scale_{mutations}"] = _stage(seconds / 4, records)
        raw[f"delta_scale_{mutations}_mutation"] = {"at": 0, "counts": {}}  # not a stage
    return raw


def _target(raw: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {t["target"]: t for t in targets(_rows(raw), 1_000_000)}[TARGET]


def test_scale_deltas_are_rows_by_size_each_against_its_own_floor_before_the_ui_stage() -> None:
    raw = _scaled((50_000, 8.0, 68_000), (1_000, 0.4, 1_360))
    raw["ui_drift_page"] = _stage(0.02, 10_000)
    raw["reconcile"] = _stage(30.0, 1_000_000)
    rows = _rows(raw)
    assert [r["stage"] for r in rows] == [
        "reconcile",
        "delta_scale_1000",
        "floor_http_delta_scale_1000",
        "delta_scale_50000",
        "floor_http_delta_scale_50000",
        "ui_drift_page",
    ]
    largest = rows[3]
    assert (largest["floor"], largest["floor_seconds"], largest["ratio_to_floor"]) == (
        "floor_http_delta_scale_50000",
        2.0,
        4.0,
    )


def test_a_delta_whose_cost_per_record_holds_or_falls_with_its_size_grows_with_the_delta() -> None:
    target = _target(_scaled((1_000, 0.4, 1_000), (10_000, 1.5, 10_000), (50_000, 7.5, 50_000)))
    assert target["met"] is True
    assert (
        target["measured"]
        == "0.400 / 0.150 / 0.150 ms a record at 1,000 / 10,000 / 50,000 mutations (1,000 / 10,000 / 50,000 records)"
    )


def test_a_delta_dearer_per_record_as_it_grows_does_not() -> None:
    target = _target(_scaled((1_000, 0.4, 1_000), (10_000, 1.5, 10_000), (50_000, 9.5, 50_000)))
    assert target["met"] is False


def test_one_scale_delta_alone_measures_nothing() -> None:
    target = _target(_scaled((10_000, 1.5, 10_000)))
    assert (target["measured"], target["met"]) == (None, None)


def test_scale_deltas_count_toward_the_memory_target() -> None:
    raw = _scaled((1_000, 0.4, 1_000), (50_000, 7.5, 50_000))
    raw["delta_scale_50000"]["peak_rss_mb"] = 2048.0
    memory = {t["target"]: t for t in targets(_rows(raw), 1_000_000)}["peak memory"]
    assert (memory["measured"], memory["met"]) == (2048.0, False)


def _doc(invoices: int, *deltas: tuple[int, float, int]) -> dict[str, Any]:
    return {
        "invoices": invoices,
        "created_at": "2026-11-28T09:00:00+00:00",
        "git": {"commit": "0123456789abcdef"},
        "machine": {
            "calibration_at_start": {"python_loop_s": 0.045},
            "calibration_at_end": {"python_loop_s": 0.046},
        },
        "stages": _rows(_scaled(*deltas)),
    }


def test_the_same_size_on_a_larger_table_is_compared_per_record() -> None:
    small = _doc(200_000, (1_000, 0.30, 1_000), (10_000, 1.40, 10_000))
    large = _doc(5_000_000, (1_000, 0.33, 1_000), (10_000, 2.10, 10_000), (50_000, 8.0, 50_000))
    deltas = scale_deltas(small) + scale_deltas(large)
    assert [(d.invoices, d.mutations) for d in scale_deltas(large)] == [
        (5_000_000, 1_000),
        (5_000_000, 10_000),
        (5_000_000, 50_000),
    ]
    assert against_the_table(deltas) == [
        {
            "mutations": 1_000,
            "smallest_table": 200_000,
            "largest_table": 5_000_000,
            "ratio": 1.1,
            "met": True,
            "cpu_ratio": None,
        },
        {
            "mutations": 10_000,
            "smallest_table": 200_000,
            "largest_table": 5_000_000,
            "ratio": 1.5,
            "met": False,
            "cpu_ratio": None,
        },
    ]
    text = markdown([large, small])
    assert "| 10,000 | 200,000 -> 5,000,000 | 1.50 | **no** | - |" in text
    assert "| 50,000 | 5,000,000 | 50,000 | 8.00 | - | 0.160 | - | - | 4.00 |" in text


def test_the_default_sizes_are_a_tenth_of_a_percent_one_and_five_percent() -> None:
    assert default_scale_deltas(1_000_000) == [1_000, 10_000, 50_000]
    assert default_scale_deltas(2_000) == [2, 20, 100]
    assert default_scale_deltas(50) == [1, 2]
    assert parse_args(["--smoke"]).scale_deltas == [2, 20, 100]
    assert parse_args(["--scale-deltas", "10000,1000,1000"]).scale_deltas == [1_000, 10_000]


def test_a_scale_delta_size_out_of_range_is_refused_before_anything_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--scale-deltas", "1000,0"])
    assert "each size must be 1..1,000,000 mutations" in capsys.readouterr().err


def _round(seconds: float, floor: float) -> dict[str, dict[str, Any]]:
    return {
        "warm_delta_scale_1000": _stage(0.4, 1_400),
        "delta_scale_1000": {
            "seconds": seconds,
            "records": 1_400,
            "extra": {"process_cpu_seconds": seconds / 2},
        },
        "floor_http_delta_scale_1000": _stage(floor, 1_400),
    }


def test_a_scale_delta_is_the_median_of_its_rounds_with_each_round_kept() -> None:
    raw: dict[str, dict[str, Any]] = {}
    keep_median_round(raw, "delta_scale_1000", [_round(0.35, 0.10), _round(0.60, 0.11), _round(0.32, 0.09)])
    assert raw["delta_scale_1000"]["seconds"] == 0.35
    assert raw["floor_http_delta_scale_1000"]["seconds"] == 0.10  # the same round's floor
    assert [r["seconds"] for r in raw["delta_scale_1000"]["extra"]["rounds"]] == [0.35, 0.60, 0.32]
    assert raw["delta_scale_1000"]["extra"]["rounds"][1]["floor_seconds"] == 0.11
    doc = _doc(1_000_000)
    doc["stages"] = _rows(raw)
    assert "| 1,000 | 1,000,000 | 1,400 | 0.35 | 0.35 / 0.60 / 0.32 | 0.250 | 0.17 | - | 3.50 |" in markdown(
        [doc]
    )


def test_of_two_rounds_the_quicker_is_kept() -> None:
    raw: dict[str, dict[str, Any]] = {}
    keep_median_round(raw, "delta_scale_1000", [_round(0.60, 0.11), _round(0.32, 0.09)])
    assert raw["delta_scale_1000"]["seconds"] == 0.32


def test_scale_rounds_must_be_at_least_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args([]).scale_rounds == 3
    with pytest.raises(SystemExit):
        parse_args(["--scale-rounds", "0"])
    assert "--scale-rounds must be at least 1, got 0" in capsys.readouterr().err


def test_a_larger_table_that_costs_waits_not_work_shows_it_in_the_cpu_ratio() -> None:
    def with_cpu(invoices: int, seconds: float, cpu: float) -> dict[str, Any]:
        doc = _doc(invoices, (10_000, seconds, 10_000))
        doc["stages"][0]["extra"]["process_cpu_seconds"] = cpu
        return doc

    small, large = with_cpu(200_000, 2.0, 1.8), with_cpu(5_000_000, 2.8, 1.8)
    (compared,) = against_the_table(scale_deltas(small) + scale_deltas(large))
    assert (compared["ratio"], compared["met"], compared["cpu_ratio"]) == (1.4, False, 1.0)
    assert "| 10,000 | 200,000 -> 5,000,000 | 1.40 | **no** | 1.00 |" in markdown([small, large])
