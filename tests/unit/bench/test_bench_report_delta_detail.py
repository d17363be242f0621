"""The bench report's delta targets say, beside the seconds, the delta's CPU and its disk reads: what
tells a delta bound by the GIL from one waiting on Postgres's pages."""

from __future__ import annotations

from typing import Any

from bench.report import _rows, targets


def _delta(seconds: float, **extra: Any) -> dict[str, Any]:
    return {"seconds": seconds, "records": 13_619, "extra": extra}


def test_each_delta_target_carries_its_cpu_and_disk_reads() -> None:
    raw = {
        "delta": _delta(2.209, process_cpu_seconds=1.329, disk_read_mb_timed=190.8),
        "delta_settled": _delta(1.756, process_cpu_seconds=1.413, disk_read_mb_timed=46.0),
    }
    by_target = {t["target"]: t for t in targets(_rows(raw), 1_000_000)}
    first = by_target["1% delta, right after the bulk loads"]
    settled = by_target["1% delta, tables vacuumed"]
    assert (first["measured"], first["met"], first["detail"]) == (
        2.209,
        False,
        "CPU 1.33 s, 191 MB read from disk",
    )
    assert (settled["met"], settled["detail"]) == (True, "CPU 1.41 s, 46 MB read from disk")


def test_a_delta_without_those_figures_has_no_detail() -> None:
    by_target = {t["target"]: t for t in targets(_rows({"delta": _delta(1.5)}), 1_000_000)}
    assert by_target["1% delta, right after the bulk loads"].get("detail") is None


def test_what_the_kernel_paged_out_before_a_delta_is_said_beside_its_disk_reads() -> None:
    raw = {
        "delta": {
            **_delta(3.64, process_cpu_seconds=2.03, disk_read_mb_timed=109.5),
            "paged_out_mb_before": 2_310.4,
        }
    }
    first = {t["target"]: t for t in targets(_rows(raw), 1_000_000)}["1% delta, right after the bulk loads"]
    assert (
        first["detail"]
        == "CPU 2.03 s, 110 MB read from disk, 2,310 MB paged out by the kernel since the stage before"
    )
    assert _rows(raw)[0]["paged_out_mb_before"] == 2_310.4
