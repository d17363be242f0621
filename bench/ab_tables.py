"""Interleaved deltas on two table sizes, at one machine speed: `python -m bench.ab_tables
[--small N] [--large N] [--mutations M] [--rounds R] [--prewarm]`.

The issue's "cost grows with the delta, not the table" was judged by runs at different N made one
after the other (`bench.scaling`), while the machine's speed drifted by up to 18% between and within
them (BENCHMARKS.md, session 18). Here one process holds two sandboxes and two databases, seeded with
`--small` and `--large` invoices, and cold-syncs both. Then R rounds: each runs a settled delta of
the same M mutations on both tables (VACUUM (ANALYZE), mutation, warm-up read of its events, as the
scale deltas do), the order alternating from round to round, each delta with its own HTTP floor.

`--prewarm` adds a second phase of R rounds in which the large table's delta first reads its staging
tables and their indexes into the page cache (`pg_prewarm`, untimed): the same delta on a server whose
page cache holds the tables. It comes after the first phase, because the pages it reads stay cached
for minutes and would warm the first phase's large deltas too.

Each sandbox keeps as many rendered objects as `bench.run` would give a run of its own N, unless
`--sandbox-cache` (or BENCH_SANDBOX_CACHE) sets one number for both.

Every stage records its own process CPU and what Postgres, Redis and its sandbox spent beside it
(`service_cpu_seconds`), so a table's cost can be told apart as waits or as work, and whose.
Results: `<results-dir>/<stamp>-ab-tables.json` and a printed summary.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg2

from bench import calibrate
from bench import run as bench_run

SIZES = ("small", "large")
PREWARMED = "largewarm"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ab_tables", description=__doc__)
    parser.add_argument("--small", type=int, default=200_000, help="invoices in the small table")
    parser.add_argument("--large", type=int, default=5_000_000, help="invoices in the large table")
    parser.add_argument("--mutations", type=int, default=10_000, help="mutations in every delta")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each phase")
    parser.add_argument(
        "--prewarm", action="store_true", help="a second phase: the large table's delta on a warm page cache"
    )
    known, rest = parser.parse_known_args(argv)
    if not 1 <= known.small < known.large:
        parser.error(f"--small must be at least 1 and below --large, got {known.small} and {known.large}")
    if not 1 <= known.mutations <= 1_000_000:
        parser.error(f"--mutations must be 1..1,000,000, got {known.mutations}")
    if known.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {known.rounds}")
    args = bench_run.parse_args([*rest, "--no-airflow"])
    for name, value in vars(known).items():
        setattr(args, name, value)
    # A cache set above 0 (flag or BENCH_SANDBOX_CACHE) serves both tables; otherwise `bench_for` sizes
    # each table's as bench.run sizes its default, for the table's own N.
    args.sandbox_cache_set = _cache_set(rest)
    return args


def _cache_set(argv: list[str]) -> bool:
    flag = argparse.ArgumentParser(add_help=False)
    flag.add_argument("--sandbox-cache", type=int, default=int(os.environ.get("BENCH_SANDBOX_CACHE", "0")))
    return bool(flag.parse_known_args(argv)[0].sandbox_cache > 0)


def bench_for(args: argparse.Namespace, size: str, workdir: Path, results_dir: Path) -> bench_run.Bench:
    """A Bench of its own (sandbox, database, Redis namespace) for `size`'s invoices. Its sandbox keeps
    `--sandbox-cache` objects when that is set, else `bench.run`'s default for its own size."""
    own = copy.copy(args)
    own.invoices = getattr(args, size)
    if not args.sandbox_cache_set:
        own.sandbox_cache = min(3 * own.invoices + 100_000, 4_000_000)
    (workdir / size).mkdir(parents=True, exist_ok=True)
    return bench_run.Bench(args=own, workdir=workdir / size, results_dir=results_dir)


def prewarm(bench: bench_run.Bench) -> dict[str, Any]:
    """Read the staging tables and all their indexes into the OS page cache (`pg_prewarm`'s `read`
    mode, which does not hold them in shared buffers), untimed. Returns the MB read and seconds."""
    started = time.perf_counter()
    disk_before = calibrate.disk_read_kb()
    conn = psycopg2.connect(bench.dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            cur.execute(
                """SELECT coalesce(sum(pg_prewarm(c.oid, 'read')), 0)
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = 'erp_staging' AND c.relkind IN ('r', 'i')
                      AND (c.oid = ANY (%(tables)s::regclass[])
                           OR c.oid IN (SELECT indexrelid FROM pg_index
                                         WHERE indrelid = ANY (%(tables)s::regclass[])))""",
                {"tables": [f"erp_staging.{table}" for table in bench_run.INVOICE_TABLES]},
            )
            blocks = int(cur.fetchone()[0])
    finally:
        conn.close()
    disk_after = calibrate.disk_read_kb()
    print(f"[bench] pg_prewarm: {blocks} blocks of staging read", flush=True)
    return {
        "blocks": blocks,
        "seconds": round(time.perf_counter() - started, 1),
        "disk_read_mb": round((disk_after - disk_before) / 1024, 1)
        if disk_before is not None and disk_after is not None
        else None,
    }


def one_delta(bench: bench_run.Bench, variant: str, round_no: int, mutations: int, *, warm: bool) -> None:
    name = f"delta_{variant}_{round_no}"
    bench.vacuum_analyze(bench_run.INVOICE_TABLES, key=f"vacuum_analyze_before_{name}")

    def prewarm_and_record() -> None:
        bench.raw[f"prewarm_{name}"] = prewarm(bench)

    bench_run.delta_stages(
        bench,
        name,
        f"floor_{name}",
        with_peer=False,
        lookback_s=0,
        mutations=mutations,
        before_timed=prewarm_and_record if warm else None,
    )


def summary(raw: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per variant (small, large, largewarm): each round's delta seconds, records, process CPU,
    Postgres's CPU, the WAL written and disk reads while timed (Postgres's CPU from the whole stage
    where a result has no timed reading), the full-page images in the WAL, and the ratio to its own
    floor, in run order, with the median per record. Then each larger variant over the small one, by
    the medians: seconds a record, the pipeline's and Postgres's CPU a record, and WAL a record."""
    found: dict[str, dict[str, list[Any]]] = {}
    for name, result in raw.items():
        parts = name.split("_")
        if len(parts) != 3 or parts[0] != "delta" or "seconds" not in result:
            continue  # a floor, a warm-up, a mutation, a prewarm, or a failed delta
        extra = result.get("extra", {})
        services = extra.get("service_cpu_seconds_timed") or result.get("service_cpu_seconds", {})
        numbers = found.setdefault(parts[1], {})
        records = result["records"]
        numbers.setdefault("seconds", []).append(round(result["seconds"], 3))
        numbers.setdefault("records", []).append(records)
        numbers.setdefault("process_cpu_seconds", []).append(extra.get("process_cpu_seconds"))
        numbers.setdefault("postgres_cpu_seconds", []).append(services.get("postgres"))
        numbers.setdefault("disk_read_mb_timed", []).append(extra.get("disk_read_mb_timed"))
        numbers.setdefault("wal_mb_timed", []).append(extra.get("wal_mb_timed"))
        numbers.setdefault("wal_fpi", []).append(result.get("postgres_checkpoints", {}).get("wal_fpi"))
        floor = raw.get(f"floor_{name}", {}).get("seconds")
        numbers.setdefault("ratio_to_floor", []).append(_ratio(result["seconds"], floor))
        numbers.setdefault("ms_a_record", []).append(round(1000 * result["seconds"] / records, 4))
        cpu_by_whom = (("process", extra.get("process_cpu_seconds")), ("postgres", services.get("postgres")))
        for key, cpu in cpu_by_whom:
            per_record = round(1000 * cpu / records, 4) if cpu is not None else None
            numbers.setdefault(f"{key}_cpu_ms_a_record", []).append(per_record)
        wal = extra.get("wal_mb_timed")
        wal_a_record = round(1024 * wal / records, 3) if wal is not None else None
        numbers.setdefault("wal_kb_a_record", []).append(wal_a_record)
    out: dict[str, Any] = {}
    for variant, numbers in found.items():
        out[variant] = {**numbers, **{f"median_{key}": _median(numbers[key]) for key in _PER_RECORD}}
    if "small" in out:
        for variant in (v for v in (*SIZES[1:], PREWARMED) if v in out):
            larger, small = out[variant], out["small"]
            out[f"{variant}_over_small"] = {
                key: _ratio(larger[f"median_{key}"], small[f"median_{key}"]) for key in _PER_RECORD
            }
    return out


_PER_RECORD = ("ms_a_record", "process_cpu_ms_a_record", "postgres_cpu_ms_a_record", "wal_kb_a_record")


def _median(values: list[Any]) -> float | None:
    known = [value for value in values if value is not None]
    return round(statistics.median(known), 4) if known else None


def _ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 2) if value is not None and base else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    workdir = bench_run.BENCH_DIR / "work" / args.stamp
    benches = {size: bench_for(args, size, workdir, results_dir) for size in SIZES}
    calibration = {"at_start": calibrate.calibrate()}
    try:
        for bench in benches.values():
            window_end = bench.prepare()
            bench.stage("floor_http", "warm_sandbox", {"window_end": window_end})
            cold = {"run_id": "bench-cold", "full_refresh": True, "window_end": window_end}
            bench.stage("sync", f"cold_sync_{bench.args.invoices}", cold)
            bench.vacuum_analyze(bench_run.INVOICE_TABLES)
        phases = [("small", "large")] + ([("small", PREWARMED)] if args.prewarm else [])
        round_no = 0
        for phase in phases:
            for phase_round in range(args.rounds):
                round_no += 1
                calibration[f"round_{round_no}"] = calibrate.calibrate()
                for variant in phase if phase_round % 2 == 0 else tuple(reversed(phase)):
                    size = "small" if variant == "small" else "large"
                    one_delta(benches[size], variant, round_no, args.mutations, warm=variant == PREWARMED)
        calibration["at_end"] = calibrate.calibrate()
    finally:
        try:
            report(benches, args, calibration, results_dir)
        finally:
            for bench in benches.values():
                bench.teardown()
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
    return 0


def report(
    benches: dict[str, bench_run.Bench],
    args: argparse.Namespace,
    calibration: dict[str, Any],
    results_dir: Path,
) -> None:
    # Stage names are unique across the two benches but for the set-up's (sandbox, cold sync, ...).
    deltas = {name: value for bench in benches.values() for name, value in bench.raw.items()}
    stages = {f"{size}:{name}": value for size, bench in benches.items() for name, value in bench.raw.items()}
    document = {
        "invoices": {size: getattr(args, size) for size in SIZES},
        "mutations": args.mutations,
        "rounds": args.rounds,
        "prewarm": args.prewarm,
        "calibration": calibration,
        "proactive_reclaim": calibrate.proactive_reclaim(),
        "summary": summary(deltas),
        "notes": [note for bench in benches.values() for note in bench.notes],
        "stages": stages,
    }
    bench_run.write_ab_document(results_dir / f"{args.stamp}-ab-tables.json", document)


if __name__ == "__main__":
    sys.exit(main())
