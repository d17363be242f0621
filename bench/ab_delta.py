"""Interleaved A/B of the 1% delta (or the replay) between two checkouts, on one sandbox and one
database: `python -m bench.ab_delta --invoices N --rounds R --a DIR --b DIR [--label-a NAME
--label-b NAME] [--stage replay]`.

The machine's speed drifts by tens of percent within minutes (BENCHMARKS.md), so two variants are
compared only inside one run: one sandbox seeded with N invoices, one cold sync (by checkout A), then
R rounds in which each checkout runs a delta on its own fresh 1% mutation, the order alternating
from round to round. Each delta is followed by its HTTP floor on the same events window, so every
delta has a floor ratio of its own. Each checkout needs its own `.venv` (scripts/setup_venv.sh).
The staging tables are vacuumed and analyzed after the cold sync (`--first-delta-cold` skips it),
so every delta is a settled one.
`--stage replay`: each round replays the cold sync's window instead (nothing changed, so the rounds
are alike), each replay followed by its HTTP floor (`floor_replay_<variant>_<round>`) and the walk's
own floor (`floor_walk_replay_<variant>_<round>`, ADR 0021).
Results: `<results-dir>/<stamp>-ab-<stage>.json` (every stage's result) and a printed summary.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from bench import run as bench_run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ab_delta", description=__doc__)
    parser.add_argument("--a", type=Path, required=True, help="checkout A (also runs the cold sync)")
    parser.add_argument("--b", type=Path, required=True, help="checkout B")
    parser.add_argument("--label-a", default="A")
    parser.add_argument("--label-b", default="B")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stage", choices=("delta", "replay"), default="delta", help="what each round runs")
    parser.add_argument(
        "--first-delta-cold",
        action="store_true",
        help="no VACUUM (ANALYZE) after the cold sync: the first deltas then read tables never vacuumed",
    )
    known, rest = parser.parse_known_args(argv)
    args = bench_run.parse_args(rest)
    for name, value in vars(known).items():
        setattr(args, name, value)
    for checkout in (args.a, args.b):
        if not (checkout / ".venv" / "bin" / "python").exists():
            parser.error(f"{checkout} has no .venv: run scripts/setup_venv.sh there first")
    return args


def use_checkout(bench: bench_run.Bench, checkout: Path) -> None:
    bench.project_dir = checkout.resolve()
    bench.stage_python = bench.project_dir / ".venv" / "bin" / "python"


def summary(raw: dict[str, dict[str, Any]], labels: dict[str, str], stage: str = "delta") -> dict[str, Any]:
    """Per variant label: each round's `stage` (delta or replay) seconds, process CPU and ratio to
    its own floor, in run order, and the median seconds. Failed rounds are left out."""
    by_variant: dict[str, dict[str, list[Any]]] = {}
    for name, result in raw.items():
        parts = name.split("_")
        if len(parts) != 3 or parts[0] != stage or result.get("failed"):
            continue  # not a round's stage (a floor, a mutation), or one that failed
        variant = parts[1]
        floor = raw.get(f"floor_{name}", {})
        numbers = by_variant.setdefault(
            labels[variant], {"seconds": [], "process_cpu_seconds": [], "ratio_to_floor": []}
        )
        numbers["seconds"].append(result["seconds"])
        numbers["process_cpu_seconds"].append(result.get("extra", {}).get("process_cpu_seconds"))
        if floor.get("seconds"):
            numbers["ratio_to_floor"].append(round(result["seconds"] / floor["seconds"], 2))
        walk_floor = raw.get(f"floor_walk_{name}", {})
        if walk_floor.get("seconds"):
            numbers.setdefault("ratio_to_walk_floor", []).append(
                round(result["seconds"] / walk_floor["seconds"], 2)
            )
    return {
        label: {**numbers, "median_seconds": statistics.median(numbers["seconds"])}
        for label, numbers in by_variant.items()
        if numbers["seconds"]
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    workdir = bench_run.BENCH_DIR / "work" / args.stamp
    workdir.mkdir(parents=True, exist_ok=True)
    bench = bench_run.Bench(args=args, workdir=workdir, results_dir=results_dir)
    labels = {"a": args.label_a, "b": args.label_b}
    checkouts = {"a": args.a, "b": args.b}
    try:
        window_end = bench.prepare()
        use_checkout(bench, args.a)
        bench.stage("floor_http", "warm_sandbox", {"window_end": window_end})
        cold = {"run_id": "bench-cold", "full_refresh": True, "window_end": window_end}
        bench.stage("sync", "cold_sync", cold)
        if not args.first_delta_cold:
            # What autovacuum does between the bulk load and the next nightly run (delta_settled).
            bench.vacuum_analyze(bench_run.INVOICE_TABLES)
        for round_no in range(1, args.rounds + 1):
            order = ("a", "b") if round_no % 2 else ("b", "a")
            for variant in order:
                use_checkout(bench, checkouts[variant])
                name = f"{args.stage}_{variant}_{round_no}"
                if args.stage == "replay":
                    replay_stages(bench, name, window_end)
                else:
                    bench_run.delta_stages(bench, name, f"floor_{name}", with_peer=False, lookback_s=0)
    finally:
        try:
            report(bench, args, labels, checkouts, results_dir)
        finally:
            bench.teardown()
    return 0


def replay_stages(bench: bench_run.Bench, name: str, window_end: Any) -> None:
    """One replay of the cold sync's window by the current checkout, then its two floors, measured
    by the harness's own checkout for both variants (an older one has no walk floor)."""
    variant = (bench.project_dir, bench.stage_python)
    bench.stage("sync", name, {"run_id": f"bench-{name}", "full_refresh": True, "window_end": window_end})
    use_checkout(bench, bench_run.PROJECT_DIR)
    try:
        bench.stage("floor_http", f"floor_{name}", {"window_end": window_end})
        bench.stage("floor_http", f"floor_walk_{name}", {"window_end": window_end, "navigation": True})
    finally:
        bench.project_dir, bench.stage_python = variant


def report(
    bench: bench_run.Bench,
    args: argparse.Namespace,
    labels: dict[str, str],
    checkouts: dict[str, Path],
    results_dir: Path,
) -> None:
    document = {
        "labels": labels,
        "checkouts": {key: str(path.resolve()) for key, path in checkouts.items()},
        "invoices": args.invoices,
        "stage": args.stage,
        "summary": summary(bench.raw, labels, args.stage),
        "stages": bench.raw,
    }
    bench_run.write_ab_document(results_dir / f"{args.stamp}-ab-{args.stage}.json", document)


if __name__ == "__main__":
    sys.exit(main())
