"""Set the scale deltas of runs at different N side by side: does a delta's cost grow with the table?

    python -m bench.scaling bench/results/A.json bench/results/B.json ...

Each run's `delta_scale_<M>` stages (`bench.run --scale-deltas`) are settled deltas of M mutations.
Runs given the same sizes at different N (invoices in the table) show, size by size, how the seconds
per record move when the table grows. Within one run, the report's target "delta cost grows with the
delta" compares its sizes. Read the runs' CPU calibrations first: seconds compare across runs only
on a machine running at the same speed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import SCALE_PREFIX, SCALE_TOLERANCE


@dataclass(frozen=True)
class ScaleDelta:
    invoices: int
    mutations: int
    records: int
    seconds: float
    cpu_seconds: float | None
    disk_read_mb: float | None
    floor_seconds: float | None
    rounds_seconds: tuple[float, ...] = ()

    @property
    def ms_per_record(self) -> float:
        return 1000 * self.seconds / self.records

    @property
    def cpu_ms_per_record(self) -> float | None:
        return None if self.cpu_seconds is None else 1000 * self.cpu_seconds / self.records


def scale_deltas(doc: dict[str, Any]) -> list[ScaleDelta]:
    """The scale deltas of one bench result document, smallest first."""
    found = []
    for row in doc["stages"]:
        stage = row["stage"]
        if not stage.startswith(SCALE_PREFIX) or not row["records"]:
            continue
        extra = row.get("extra") or {}
        found.append(
            ScaleDelta(
                invoices=int(doc["invoices"]),
                mutations=int(stage[len(SCALE_PREFIX) :]),
                records=int(row["records"]),
                seconds=float(row["seconds"]),
                cpu_seconds=extra.get("process_cpu_seconds"),
                disk_read_mb=extra.get("disk_read_mb_timed"),
                floor_seconds=row.get("floor_seconds"),
                rounds_seconds=tuple(float(r["seconds"]) for r in extra.get("rounds", ())),
            )
        )
    return sorted(found, key=lambda delta: delta.mutations)


def against_the_table(deltas: list[ScaleDelta]) -> list[dict[str, Any]]:
    """For each size measured on at least two tables: its seconds per record on the largest table
    over those on the smallest, whether that stays within SCALE_TOLERANCE, and the same ratio of
    their CPU (the work; the rest is waiting, for the disk when the table outgrows the page cache)."""
    by_size: dict[int, list[ScaleDelta]] = {}
    for delta in deltas:
        by_size.setdefault(delta.mutations, []).append(delta)
    out = []
    for mutations, measured in sorted(by_size.items()):
        if len({delta.invoices for delta in measured}) < 2:
            continue
        smallest = min(measured, key=lambda delta: delta.invoices)
        largest = max(measured, key=lambda delta: delta.invoices)
        ratio = largest.ms_per_record / smallest.ms_per_record
        cpu = (largest.cpu_ms_per_record, smallest.cpu_ms_per_record)
        out.append(
            {
                "mutations": mutations,
                "smallest_table": smallest.invoices,
                "largest_table": largest.invoices,
                "ratio": round(ratio, 2),
                "met": ratio <= SCALE_TOLERANCE,
                "cpu_ratio": round(cpu[0] / cpu[1], 2) if cpu[0] is not None and cpu[1] else None,
            }
        )
    return out


def markdown(docs: list[dict[str, Any]]) -> str:
    deltas = sorted(
        (delta for doc in docs for delta in scale_deltas(doc)), key=lambda d: (d.mutations, d.invoices)
    )
    lines = ["| run | invoices | calibration loop s (start / end) |", "| --- | ---: | --- |"]
    for doc in sorted(docs, key=lambda d: d["invoices"]):
        machine = doc.get("machine") or {}
        start = (machine.get("calibration_at_start") or {}).get("python_loop_s")
        end = (machine.get("calibration_at_end") or {}).get("python_loop_s")
        run = f"{doc['created_at'][:19]}Z {doc['git']['commit'][:10]}"
        lines.append(f"| {run} | {doc['invoices']:,} | {start} / {end} |")
    lines += [
        "",
        "| mutations | invoices in the table | records | seconds (median round) | its rounds s | ms a record "
        "| CPU s | MB read from disk | x HTTP floor |",
        "| ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for d in deltas:
        ratio = f"{d.seconds / d.floor_seconds:.2f}" if d.floor_seconds else "-"
        cpu = "-" if d.cpu_seconds is None else f"{d.cpu_seconds:.2f}"
        disk = "-" if d.disk_read_mb is None else f"{d.disk_read_mb:,.0f}"
        rounds = " / ".join(f"{seconds:.2f}" for seconds in d.rounds_seconds) or "-"
        lines.append(
            f"| {d.mutations:,} | {d.invoices:,} | {d.records:,} | {d.seconds:.2f} | {rounds} "
            f"| {d.ms_per_record:.3f} | {cpu} | {disk} | {ratio} |"
        )
    compared = against_the_table(deltas)
    if compared:
        lines += [
            "",
            f"| mutations | tables | ms a record, largest table / smallest | within {SCALE_TOLERANCE}x "
            "| CPU a record, largest / smallest |",
            "| ---: | --- | ---: | --- | ---: |",
        ]
        for c in compared:
            lines.append(
                f"| {c['mutations']:,} | {c['smallest_table']:,} -> {c['largest_table']:,} "
                f"| {c['ratio']:.2f} | {'yes' if c['met'] else '**no**'} "
                f"| {'-' if c['cpu_ratio'] is None else format(c['cpu_ratio'], '.2f')} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    docs = [json.loads(Path(path).read_text()) for path in argv]
    print(markdown(docs), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
