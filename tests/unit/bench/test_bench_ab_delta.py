"""The delta A/B's summary: each variant's deltas, with their own floors, mutations left out."""

from __future__ import annotations

from typing import Any

from bench.ab_delta import summary


def _delta(seconds: float, cpu: float) -> dict[str, Any]:
    return {"seconds": seconds, "records": 100, "extra": {"process_cpu_seconds": cpu}}


def test_each_variant_gets_its_deltas_cpu_and_floor_ratios_in_run_order() -> None:
    raw: dict[str, dict[str, Any]] = {
        "cold_sync": {"seconds": 100.0},
        "delta_a_1_mutation": {"at": 1, "counts": {}},
        "warm_delta_a_1": {"seconds": 1.5},
        "delta_a_1": _delta(2.0, 1.5),
        "floor_delta_a_1": {"seconds": 0.5},
        "delta_b_1": _delta(1.0, 0.8),
        "floor_delta_b_1": {"seconds": 0.5},
        "delta_b_2": _delta(3.0, 0.9),  # its floor failed: no ratio
        "delta_a_2": {"failed": True, "log_tail": "boom"},
    }
    got = summary(raw, {"a": "before", "b": "after"})
    assert got == {
        "before": {
            "seconds": [2.0],
            "process_cpu_seconds": [1.5],
            "ratio_to_floor": [4.0],
            "median_seconds": 2.0,
        },
        "after": {
            "seconds": [1.0, 3.0],
            "process_cpu_seconds": [0.8, 0.9],
            "ratio_to_floor": [2.0],
            "median_seconds": 2.0,
        },
    }


def test_a_replay_round_gets_its_ratio_to_both_floors() -> None:
    raw: dict[str, dict[str, Any]] = {
        "cold_sync": {"seconds": 100.0},
        "replay_a_1": _delta(12.0, 11.0),
        "floor_replay_a_1": {"seconds": 10.0},
        "floor_walk_replay_a_1": {"seconds": 8.0},
        "delta_a_1": _delta(2.0, 1.5),  # not a replay round
    }
    got = summary(raw, {"a": "before", "b": "after"}, "replay")
    assert got == {
        "before": {
            "seconds": [12.0],
            "process_cpu_seconds": [11.0],
            "ratio_to_floor": [1.2],
            "ratio_to_walk_floor": [1.5],
            "median_seconds": 12.0,
        }
    }
