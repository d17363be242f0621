"""Session 20's experiment (not part of the harness): a cold sync of the whole window in one process,
against the same window cut at its median `created` second into two halves synced at once by two
processes, each half its own window, run id and stream lock (the lock key patched by ERP_SLICE, see
the .diff beside this file), each variant into a fresh database and an emptied Redis. Rounds
alternate the order. To run it again: copy it to bench/exp_slices.py, apply the .diff beside it
(`git apply`), then `ROUNDS=4 python -m bench.exp_slices --invoices 200000` with scripts/env.sh
sourced. BENCHMARKS.md, "Session 20: the cold sync in two processes"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg2
import redis

from bench import calibrate
from bench import run as bench_run

args = bench_run.parse_args([*sys.argv[1:], "--no-airflow"])
workdir = bench_run.BENCH_DIR / "work" / args.stamp
workdir.mkdir(parents=True, exist_ok=True)
Path(args.results_dir).mkdir(parents=True, exist_ok=True)
bench = bench_run.Bench(args=args, workdir=workdir, results_dir=Path(args.results_dir))
out: dict[str, Any] = {"stamp": args.stamp, "invoices": args.invoices, "runs": []}
out["calibration"] = {"at_start": calibrate.calibrate()}


def clear_namespaces() -> None:
    """Each variant starts with an empty Redis: the first load of a table clears its ledger entries
    by SCAN MATCH, which walks every key in the database, other namespaces' included."""
    client = redis.Redis.from_url(bench_run.REDIS_URL)
    for ns in bench.namespaces:
        keys = list(client.scan_iter(match=f"{ns}:*", count=10_000))
        for start in range(0, len(keys), 5_000):
            client.delete(*keys[start : start + 5_000])
    out.setdefault("redis_keys_left", []).append(client.dbsize())
    client.close()


def fresh(tag: str) -> None:
    clear_namespaces()
    bench.dsn = bench.create_database()
    bench.namespace = f"erpbench-exp-{args.stamp[-7:].lower()}-{tag}"
    bench.namespaces.append(bench.namespace)


def launch(name: str, start: str | None, end: str) -> tuple[dict[str, Any], subprocess.Popen[bytes]]:
    cfg = bench.base_config(name)
    cfg["params"] = {"run_id": name, "full_refresh": True, "window_end": end, "window_start": start}
    cfg["currency_exponents"] = bench_run._currency_exponents()
    path = workdir / f"{name}.config.json"
    path.write_text(json.dumps(cfg, default=str))
    env = bench.env() | {"ERP_SLICE": name[-1]}
    argv = [sys.executable, "-m", "bench.stage", "sync", str(path)]
    return cfg, subprocess.Popen(argv, env=env, cwd=bench.project_dir)


def staged_counts() -> tuple[int, int]:
    with psycopg2.connect(bench.dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM erp_staging.ar_invoices),"
            " (SELECT count(*) FROM erp_staging.ar_invoice_lines)"
        )
        found = cur.fetchone()
    return int(found[0]), int(found[1])


def median_created() -> str:
    with psycopg2.connect(bench.dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY issued_at) FROM erp_staging.ar_invoices"
        )
        return str(cur.fetchone()[0].replace(microsecond=0).isoformat())


def variant(name: str, windows: list[tuple[str | None, str]]) -> dict[str, Any]:
    fresh(name)
    cpu_before = calibrate.CpuTimes.now()
    services_before = calibrate.service_cpu_seconds(bench.service_pids())
    started = time.perf_counter()
    children = [launch(f"{name}_{i}", start, end) for i, (start, end) in enumerate(windows)]
    for _, child in children:
        if child.wait() != 0:
            raise RuntimeError(f"{name}: a sync exited {child.returncode}")
    wall = time.perf_counter() - started
    parts = [json.loads(Path(cfg["out"]).read_text()) for cfg, _ in children]
    services = calibrate.cpu_spent(services_before, calibrate.service_cpu_seconds(bench.service_pids()))
    return {
        "variant": name,
        "wall_seconds": round(wall, 2),
        "timed_seconds": [round(part["seconds"], 2) for part in parts],
        "records": [part["records"] for part in parts],
        "process_cpu_seconds": [part["extra"]["process_cpu_seconds"] for part in parts],
        "machine_cpu": calibrate.cpu_shares(cpu_before, calibrate.CpuTimes.now()),
        "service_cpu_seconds": services,
        "staged_invoices_lines": staged_counts(),
    }


try:
    end = bench.prepare()
    bench.stage("floor_http", "warm_sandbox", {"window_end": end})
    out["runs"].append(variant("one_r0", [(None, end)]))
    mid = out["cut_at"] = median_created()
    for round_no in range(int(os.environ.get("ROUNDS", "3"))):
        order = ["two"] if round_no == 0 else (["two", "one"] if round_no % 2 else ["one", "two"])
        for kind in order:
            windows: list[tuple[str | None, str]] = (
                [(None, end)] if kind == "one" else [(None, mid), (mid, end)]
            )
            out["runs"].append(variant(f"{kind}_r{round_no}", windows))
            print(json.dumps(out["runs"][-1]), flush=True)
    out["calibration"]["at_end"] = calibrate.calibrate()
finally:
    bench.teardown()
    result_path = Path(args.results_dir) / f"{args.stamp}-two-processes.json"
    result_path.write_text(json.dumps(out, default=str, indent=1))
    print("RESULT", result_path)
