"""The bench report's floors: summed where a stage's floor has parts, averaged where two bracket it."""

from __future__ import annotations

from typing import Any

from bench.report import _rows, targets


def _stage(seconds: float) -> dict[str, Any]:
    return {"seconds": seconds, "records": 1000}


def test_the_replay_is_held_to_the_mean_of_the_floors_before_and_after_it() -> None:
    raw = {"floor_http_full": _stage(10.0), "replay": _stage(12.0), "floor_http_replay": _stage(8.0)}
    replay = {row["stage"]: row for row in _rows(raw)}["replay"]
    assert replay["floor_seconds"] == 9.0
    assert replay["ratio_to_floor"] == round(12.0 / 9.0, 2)
    assert replay["floor"] == "mean(floor_http_full, floor_http_replay)"


def test_without_the_second_floor_the_replay_keeps_the_first() -> None:
    raw = {"floor_http_full": _stage(10.0), "replay": _stage(12.0)}
    replay = {row["stage"]: row for row in _rows(raw)}["replay"]
    assert (replay["floor"], replay["floor_seconds"], replay["ratio_to_floor"]) == (
        "floor_http_full",
        10.0,
        1.2,
    )


def test_the_cold_sync_floor_is_still_the_sum_of_its_parts() -> None:
    raw = {"floor_http_full": _stage(10.0), "floor_copy": _stage(5.0), "cold_sync": _stage(30.0)}
    cold = {row["stage"]: row for row in _rows(raw)}["cold_sync"]
    assert (cold["floor_seconds"], cold["ratio_to_floor"]) == (15.0, 2.0)


def test_the_replay_is_also_held_to_the_mean_of_its_walk_floors() -> None:
    raw = {
        "floor_http_full": _stage(10.0),
        "floor_walk_full": _stage(7.0),
        "replay": _stage(9.0),
        "floor_http_replay": _stage(10.0),
        "floor_walk_replay": _stage(8.0),
    }
    by_target = {t["target"]: t for t in targets(_rows(raw), 1000)}
    walk = by_target["replay vs its walk's floor"]
    assert (walk["measured"], walk["met"]) == (round(9.0 / 7.5, 2), True)
    assert by_target["replay vs extraction floor"]["measured"] == 0.9


def test_without_both_walk_floors_there_is_no_walk_ratio() -> None:
    raw = {"floor_http_full": _stage(10.0), "floor_walk_full": _stage(7.0), "replay": _stage(12.0)}
    walk = {t["target"]: t for t in targets(_rows(raw), 1000)}["replay vs its walk's floor"]
    assert (walk["measured"], walk["met"]) == (None, None)
