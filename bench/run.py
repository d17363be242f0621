"""The benchmark harness: `python -m bench.run [--invoices N | --smoke]` (what `make bench` runs).

One run on one machine, everything against real services:
  1. a sandbox seeded with N invoices (with lines, charges, refunds, credit notes), its own port;
  2. a fresh Postgres database `erp_bench_<hex>` (dropped at the end) and a Redis namespace;
  3. stages, each in its own child process (so its peak RSS is its own):
       floor_http_full   HTTP pagination + decoding of the invoice list alone (the client's decoder)
       cold_sync         sync_stream full refresh of the window (extract, validate, map, dedupe, load)
       floor_copy        Postgres COPY of the same mapped rows into empty copies of the tables
       floor_mget        Redis MGET of every ledger key the sync wrote
       peer_dlt_cold     dlt merge-load of the same rows into the same Postgres (bench/.venv-peers)
       floor_walk_full   HTTP pagination + what the walk alone decodes (keys, versions, line ids),
                         right before the replay
       replay            the same window again, nothing changed (zero staging writes expected)
       floor_http_replay floor_http_full again, right after the replay (its floor is the mean of both)
       floor_walk_replay floor_walk_full again, right after it (the replay's walk floor: their mean)
       peer_dlt_replay   dlt merge-load of the same rows again
       delta             1% of N mutated in the sandbox and its events read once (untimed), then an
                         incremental run
       floor_http_delta  HTTP pagination + decoding of the same events window alone
       delta_settled     another 1% mutated, after VACUUM (ANALYZE) of staging (untimed), then a delta
       peer_dlt_delta    dlt merge-load of the rows the delta changed
       delta_rtt         another 1% delta with every API response delayed --rtt-ms (a real API's
                         round trip), read as one walk; floor_http_delta_rtt its HTTP floor
       delta_rtt_sliced  the same with the window read in 4 concurrent slices (`window_slices`);
                         floor_http_delta_rtt_sliced the one-walk HTTP floor of its window
       reconcile         reconcile_run.reconcile_period over the period (SaaS re-read + SQL + diff + report)
       peer_datacompy    datacompy on the same two sides (HTTP re-read + SQL + compare)
       delta_scale_<M>   (--scale-deltas, default 0.1%, 1% and 5% of N) M mutations after VACUUM
                         (ANALYZE), then a delta, the median of --scale-rounds (default 3);
                         floor_http_delta_scale_<M> its HTTP floor: does the
                         delta's cost grow with the delta? (`python -m bench.scaling` sets runs at
                         other N side by side, `python -m bench.ab_tables` two N interleaved:
                         not with the table?)
       airflow_dags_test one `airflow dags test saas_to_erp_sync` (invoices, a small window), wall time
  4. a printed table, bench/results/<timestamp>.json and .md.

Benchmarks are measurements, not tests: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import redis

from bench import calibrate, report
from bench.procwatch import run_child, tree_rss_kb

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent
PEERS_PYTHON = BENCH_DIR / ".venv-peers" / "bin" / "python"
PG_ADMIN_DSN = os.environ.get("ERP_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ERP_BENCH_REDIS", "redis://127.0.0.1:6379/0")
SECRET_KEY = "sk_test_bench_" + uuid.uuid4().hex[:16]
INVOICE_TABLES = ["ar_invoices", "ar_invoice_lines"]
RTT_SLICES = 4  # delta_rtt_sliced's `window_slices`
# Mutations that change invoices (the stream under test); new invoices arrive as well.
INVOICE_MUTATIONS = ["pay_invoice", "void_invoice", "mark_uncollectible", "new_invoice"]


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path
    results_dir: Path
    base_url: str = ""
    dsn: str = ""
    namespace: str = ""
    window_end: datetime | None = None
    delta_end: datetime | None = None  # where the last delta stage's window ended
    rows: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, dict[str, Any]] = field(default_factory=dict)
    sandbox: subprocess.Popen[bytes] | None = None
    databases: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The checkout whose code the stages run (`bench.ab_delta` switches between two).
    project_dir: Path = PROJECT_DIR
    stage_python: Path | None = None
    # The kernel's proactive reclaim counter when the last stage ended (`calibrate.paged_out_bytes`).
    paged_out_at_last_stage: int | None = None

    # -- plumbing --------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = f"{self.project_dir / 'include'}:{self.project_dir}" + (
            f":{env['PYTHONPATH']}" if env.get("PYTHONPATH") else ""
        )
        return env

    def base_config(self, name: str) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "secret_key": SECRET_KEY,
            "dsn": self.dsn,
            "redis_url": REDIS_URL,
            "namespace": self.namespace,
            "page_size": 100,
            "batch_records": self.args.batch_records,
            "workdir": str(self.workdir),
            "project_dir": str(self.project_dir),
            "sandbox_pid": self.service_pids()["sandbox"],
            "out": str(self.workdir / f"{name}.result.json"),
            "profile": str(self.results_dir / f"{self.stamp}-{name}.profile.txt")
            if name in self.args.profile
            else None,
            "gil_profile": str(self.results_dir / f"{self.stamp}-{name}.gil.txt")
            if name in self.args.gil_profile
            else None,
            "sql_log": str(self.results_dir / f"{self.stamp}-{name}.sql.txt")
            if name in self.args.sql_log
            else None,
        }

    @property
    def stamp(self) -> str:
        return str(self.args.stamp)

    def run_stage(
        self,
        name: str,
        argv_tail: list[str],
        cfg: dict[str, Any],
        *,
        python: Path | None = None,
        reads_staging: bool = False,
    ) -> dict[str, Any] | None:
        """Run one stage's child and return its result (None when it failed; the failure is noted)."""
        if name in self.args.skip:
            return None
        config_path = self.workdir / f"{name}.config.json"
        config_path.write_text(json.dumps(cfg, default=str, indent=1))
        out = Path(cfg["out"])
        out.unlink(missing_ok=True)
        exe = str(python or sys.executable)
        argv = [exe, *argv_tail, str(config_path)]
        print(f"[bench] {name} ...", flush=True)
        load_before = os.getloadavg()[0]
        autovacuum_before, checkpoints_before = postgres_activity()
        tables_before = staging_table_state(self.dsn) if reads_staging else None
        if name in self.args.drop_caches_before:
            self.raw.setdefault("page_cache_dropped_before", {})[name] = calibrate.drop_page_cache()
        disk_before = calibrate.disk_read_kb()
        paged_before = calibrate.paged_out_bytes()
        cpu_before = calibrate.CpuTimes.now()
        services_before = calibrate.service_cpu_seconds(self.service_pids())
        child = run_child(
            argv,
            env=self.env(),
            log_path=self.workdir / "stages.log",
            timeout_s=self.args.timeout,
            cwd=self.project_dir,
        )
        if child.returncode != 0 or not out.exists():
            self.notes.append(f"{name} FAILED (exit {child.returncode}); see the log tail in the JSON")
            self.raw[name] = {"failed": True, "log_tail": child.log_tail[-1500:]}
            print(f"[bench] {name} FAILED (exit {child.returncode}):\n{child.log_tail[-1500:]}", flush=True)
            return None
        result: dict[str, Any] = json.loads(out.read_text())
        result["peak_rss_mb"] = max(child.tree_peak_rss_mb, result.get("ru_maxrss_mb", 0))
        result["wall_seconds"] = child.wall_seconds
        if child.wall_seconds >= 60:  # long stages: RSS every TIMELINE_EVERY_S, to see it stay flat
            result["rss_timeline_mb"] = child.rss_timeline
        result["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        result["cpu"] = calibrate.cpu_shares(cpu_before, calibrate.CpuTimes.now())
        services_after = calibrate.service_cpu_seconds(self.service_pids())
        result["service_cpu_seconds"] = calibrate.cpu_spent(services_before, services_after)
        disk_after = calibrate.disk_read_kb()
        if disk_before is not None and disk_after is not None:
            result["disk_read_mb"] = round((disk_after - disk_before) / 1024, 1)
        result.update(self._paged_out(paged_before))
        autovacuum_after, checkpoints_after = postgres_activity()
        result["autovacuum"] = {"before": autovacuum_before, "after": autovacuum_after}
        result["postgres_checkpoints"] = _moved(checkpoints_before, checkpoints_after)
        if tables_before is not None:
            result["staging_tables_before"] = tables_before
        self.raw[name] = result
        print(f"[bench] {name}: {result['records']} records in {result['seconds']:.2f}s", flush=True)
        return result

    def service_pids(self) -> dict[str, int | None]:
        return {"sandbox": self.sandbox.pid if self.sandbox is not None else None}

    def _paged_out(self, before: int | None) -> dict[str, float]:
        """What the kernel's proactive reclaim paged out while the stage ran, and between the stage
        before it and this one (the page cache a stage finds gone; BENCHMARKS.md, session 17)."""
        after = calibrate.paged_out_bytes()
        last, self.paged_out_at_last_stage = self.paged_out_at_last_stage, after
        if before is None or after is None:
            return {}
        found = {"paged_out_mb": round((after - before) / 2**20, 1)}
        if last is not None:
            found["paged_out_mb_before"] = round((before - last) / 2**20, 1)
        return found

    def stage(self, kind: str, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
        cfg = self.base_config(name)
        cfg["params"] = params
        cfg["currency_exponents"] = _currency_exponents()
        return self.run_stage(
            name, ["-m", "bench.stage", kind], cfg, python=self.stage_python, reads_staging=kind == "sync"
        )

    def peer(self, script: str, name: str, extra: dict[str, Any]) -> dict[str, Any] | None:
        if not PEERS_PYTHON.exists():
            self.notes.append(f"{name} skipped: {PEERS_PYTHON} missing (scripts/bench.sh creates it)")
            return None
        cfg = self.base_config(name)
        cfg.update(extra)
        return self.run_stage(name, [str(BENCH_DIR / "peers" / script)], cfg, python=PEERS_PYTHON)

    # -- set-up / tear-down ----------------------------------------------------------------------

    def start_sandbox(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "erp_sync.sandbox",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--invoices",
            str(self.args.invoices),
            "--seed",
            str(self.args.seed),
            "--secret-key",
            SECRET_KEY,
            "--cache-objects",
            str(self.args.sandbox_cache),
        ]
        log = (self.workdir / "sandbox.log").open("wb")
        started = time.perf_counter()
        self.sandbox = subprocess.Popen(
            argv, env=self.env(), stdout=subprocess.PIPE, stderr=log, cwd=PROJECT_DIR
        )
        assert self.sandbox.stdout is not None
        line = self.sandbox.stdout.readline().decode().strip()
        if not line.startswith("SANDBOX READY "):
            raise SystemExit(f"sandbox did not start: {line!r}; see {self.workdir / 'sandbox.log'}")
        self.base_url = line.split(" ", 2)[2]
        seconds = time.perf_counter() - started
        rss = tree_rss_kb(self.sandbox.pid) / 1024
        self.raw["seed_sandbox"] = {"records": self.args.invoices, "seconds": seconds, "peak_rss_mb": rss}
        print(f"[bench] sandbox {self.base_url}: {self.args.invoices} invoices in {seconds:.1f}s", flush=True)

    def prepare(self) -> str:
        """The run's sandbox, database and Redis namespace; returns the cold window's end (ISO)."""
        self.start_sandbox()
        self.dsn = self.create_database()
        self.namespace = f"erpbench-{uuid.uuid4().hex[:10]}"
        self.namespaces.append(self.namespace)
        self.window_end = datetime.now(UTC).replace(microsecond=0)
        return self.window_end.isoformat()

    def create_database(self, suffix: str = "") -> str:
        name = f"erp_bench_{uuid.uuid4().hex[:10]}{suffix}"
        _admin_sql(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name
        from erp_sync.store.migrations import apply_migrations

        with psycopg2.connect(dsn) as conn:
            apply_migrations(conn)
        conn.close()
        return dsn

    def teardown(self) -> None:
        if self.sandbox is not None and self.sandbox.poll() is None:
            self.raw.setdefault("seed_sandbox", {})["rss_at_end_mb"] = tree_rss_kb(self.sandbox.pid) / 1024
            self.sandbox.send_signal(signal.SIGTERM)
            try:
                self.sandbox.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.sandbox.kill()
                self.sandbox.wait()
        if not self.args.keep:
            for name in self.databases:
                _admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            client = redis.Redis.from_url(REDIS_URL)
            for ns in self.namespaces:
                batch = []
                for key in client.scan_iter(match=f"{ns}:*", count=10_000):
                    batch.append(key)
                    if len(batch) >= 5_000:
                        client.delete(*batch)
                        batch = []
                if batch:
                    client.delete(*batch)
            client.close()
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            self.notes.append(
                f"kept: databases {self.databases}, namespaces {self.namespaces}, {self.workdir}"
            )

    # -- helpers ---------------------------------------------------------------------------------

    def set_rtt(self, rtt_ms: int) -> None:
        """Delay every API response by `rtt_ms` (the sandbox's `slow_ms` fault; 0 turns it off)."""
        import requests

        response = requests.post(f"{self.base_url}/_admin/faults", json={"slow_ms": rtt_ms}, timeout=30)
        response.raise_for_status()

    def mutate(self, n: int) -> dict[str, Any]:
        import requests

        at = int(time.time())
        response = requests.post(
            f"{self.base_url}/_admin/mutate", json={"n": n, "at": at, "kinds": INVOICE_MUTATIONS}, timeout=600
        )
        response.raise_for_status()
        body = response.json()
        return {"at": at, "counts": body.get("counts", {})}

    def vacuum_analyze(self, tables: Sequence[str], key: str = "vacuum_analyze") -> None:
        """Untimed: what autovacuum does to freshly bulk-loaded tables before the next nightly run
        (hint bits, visibility map, planner statistics). Its seconds are kept under `key`."""
        started = time.perf_counter()
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                for table in tables:
                    cur.execute(f"VACUUM (ANALYZE) erp_staging.{table}")
        finally:
            conn.close()
        seconds = round(time.perf_counter() - started, 1)
        self.raw[key] = {"tables": list(tables), "seconds": seconds}
        print(f"[bench] VACUUM (ANALYZE) {', '.join(tables)}: {seconds}s", flush=True)

    def dump_rows(self, table: str, where: str, params: tuple[Any, ...], path: Path) -> int:
        columns = self.business_columns(table)
        with psycopg2.connect(self.dsn) as conn, conn.cursor() as cur:
            sql = cur.mogrify(
                f"SELECT {', '.join(columns)}, sync_batch_id FROM erp_staging.{table} WHERE {where}", params
            ).decode()
            with path.open("wb") as fh:
                cur.copy_expert(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", fh)
            count = cur.rowcount
        conn.close()
        return int(count)

    def column_types(self, table: str) -> list[list[str]]:
        with psycopg2.connect(self.dsn) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = 'erp_staging' AND table_name = %s ORDER BY ordinal_position",
                (table,),
            )
            rows = [[name, dtype] for name, dtype in cur.fetchall()]
        conn.close()
        return rows

    def business_columns(self, table: str) -> list[str]:
        loader_set = {"sync_batch_id", "interface_status", "loaded_at"}
        return [name for name, _ in self.column_types(table) if name not in loader_set]

    def dlt_tables(self, dumps: dict[str, Path]) -> list[dict[str, Any]]:
        types = {t: self.column_types(t) for t in dumps}
        return [
            {
                "name": table,
                "csv": str(path),
                # the dumps hold the mapped columns, then the batch id (as floor_copy writes them)
                "columns": [c for c in types[table] if c[0] in self.business_columns(table)]
                + [["sync_batch_id", "bigint"]],
                "primary_key": ["source_system", "source_id"],
            }
            for table, path in dumps.items()
        ]


def _admin_sql(sql: str) -> None:
    """One statement outside any transaction (CREATE/DROP DATABASE), on the admin database."""
    conn = psycopg2.connect(PG_ADMIN_DSN)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def postgres_activity() -> tuple[list[str], dict[str, int]]:
    """What Postgres's autovacuum workers are doing right now, cluster-wide ("erp_bench_x: autovacuum:
    VACUUM ANALYZE erp_staging.ar_invoices", ...), and its cumulative checkpoint counters
    (pg_stat_bgwriter) and WAL counters (pg_stat_wal: records, full-page images, bytes), in one
    connection: a stage beside them shared the disk and the cores."""
    try:
        conn = psycopg2.connect(PG_ADMIN_DSN, connect_timeout=5)
    except psycopg2.Error:
        return ["(not readable)"], {}
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT coalesce(datname, '?') || ': ' || query FROM pg_stat_activity"
                " WHERE backend_type = 'autovacuum worker' ORDER BY 1"
            )
            autovacuum = [str(row[0]) for row in cur.fetchall()]
            cur.execute(
                "SELECT checkpoints_timed + checkpoints_req, buffers_checkpoint, buffers_backend"
                " FROM pg_stat_bgwriter"
            )
            checkpoints, buffers, backend = cur.fetchone()
            cur.execute("SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal")
            records, fpi, wal_bytes = cur.fetchone()
        counters = {
            "checkpoints": checkpoints,
            "buffers_checkpoint": buffers,
            "buffers_backend": backend,
            "wal_records": records,
            "wal_fpi": fpi,
            "wal_bytes": int(wal_bytes),
        }
        return autovacuum, counters
    finally:
        conn.close()


def staging_table_state(dsn: str | None) -> dict[str, dict[str, Any]]:
    """What Postgres knows of the staging tables when a sync stage starts: the planner's row count
    (reltuples) and pages all-visible (relallvisible of relpages: index-only scans and hint bits),
    the changes since the last (auto)vacuum and analyze, and when those last ran."""
    if not dsn:
        return {}
    try:
        conn = psycopg2.connect(dsn, connect_timeout=5)
    except psycopg2.Error:
        return {}
    try:
        with conn.cursor() as cur:
            cur.execute(
                """SELECT c.relname, c.reltuples::bigint, c.relpages, c.relallvisible, s.n_live_tup,
                          s.n_dead_tup, s.n_mod_since_analyze, s.n_ins_since_vacuum,
                          greatest(s.last_vacuum, s.last_autovacuum),
                          greatest(s.last_analyze, s.last_autoanalyze),
                          s.autovacuum_count, s.autoanalyze_count
                   FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
                   WHERE s.schemaname = 'erp_staging' ORDER BY 1"""
            )
            names = [
                "reltuples",
                "relpages",
                "relallvisible",
                "n_live_tup",
                "n_dead_tup",
                "n_mod_since_analyze",
                "n_ins_since_vacuum",
                "last_vacuum",
                "last_analyze",
                "autovacuum_count",
                "autoanalyze_count",
            ]
            return {
                str(row[0]): {
                    k: (v.isoformat() if hasattr(v, "isoformat") else v)
                    for k, v in zip(names, row[1:], strict=True)
                }
                for row in cur.fetchall()
            }
    except psycopg2.Error:
        return {}
    finally:
        conn.close()


def _moved(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before[name] for name in before if name in after}


def _currency_exponents() -> dict[str, int]:
    from erp_sync.core.money import CURRENCY_EXPONENTS

    return {str(k): int(v) for k, v in CURRENCY_EXPONENTS.items()}


# -- the run --------------------------------------------------------------------------------------


def run(bench: Bench) -> None:
    args = bench.args
    n = args.invoices
    window_end = bench.prepare()

    # One untimed-for-targets pass first: the sandbox caches serialised objects (--sandbox-cache), so
    # every later stage reads it warm, as the floor does: the SaaS's own rendering is not the
    # pipeline's work, and here it would run on the same two cores.
    bench.stage("floor_http", "warm_sandbox", {"window_end": window_end})
    bench.stage("floor_http", "floor_http_full", {"window_end": window_end})
    bench.stage("sync", "cold_sync", {"run_id": "bench-cold", "full_refresh": True, "window_end": window_end})
    bench.stage(
        "floor_copy",
        "floor_copy",
        {
            "tables": INVOICE_TABLES,
            "columns": {t: bench.business_columns(t) for t in INVOICE_TABLES},
        },
    )
    bench.stage("floor_mget", "floor_mget", {"tables": INVOICE_TABLES})
    cold_dumps = {t: bench.workdir / f"floor_{t}.csv" for t in INVOICE_TABLES}
    if all(p.exists() for p in cold_dumps.values()):
        dlt_tables = bench.dlt_tables(cold_dumps)
        bench.peer(
            "dlt_peer.py", "peer_dlt_cold", {"dataset": "bench_dlt", "tables": dlt_tables, "records": n}
        )
    # A replay whose batches are found committed decodes only what its walk reads (ADR 0021): its
    # second, stricter floor decodes the same, taken before and after it as the first one is.
    walk_floor = {"window_end": window_end, "navigation": True}
    replaying = "replay" not in args.skip
    if replaying:
        bench.stage("floor_http", "floor_walk_full", walk_floor)
    bench.stage("sync", "replay", {"run_id": "bench-replay", "full_refresh": True, "window_end": window_end})
    if replaying:
        # The same floors again, right after the replay: the replay's ratios are taken against the
        # means of the two that bracket it (one ~10 s floor alone varied by 50% between runs of the
        # same code).
        bench.stage("floor_http", "floor_http_replay", {"window_end": window_end})
        bench.stage("floor_http", "floor_walk_replay", walk_floor)
    if all(p.exists() for p in cold_dumps.values()):
        bench.peer(
            "dlt_peer.py", "peer_dlt_replay", {"dataset": "bench_dlt", "tables": dlt_tables, "records": n}
        )

    # 1% delta: mutate (untimed), then an incremental run from the stored cursor to just after. The
    # first runs right after the bulk loads; the second after VACUUM (ANALYZE), as autovacuum leaves
    # the tables between nightly runs.
    delta_stages(bench, "delta", "floor_http_delta", with_peer=True)
    if "delta_settled" not in args.skip:
        bench.vacuum_analyze(INVOICE_TABLES)
        # No lookback: seconds after the first delta, the default 10 minutes would re-read its events
        # too (a nightly run's lookback re-reads 10 minutes of a day's).
        delta_stages(bench, "delta_settled", "floor_http_delta_settled", with_peer=False, lookback_s=0)
    # Against a real API the delta waits on round trips, not on this machine's CPU.
    for name, slices in (("delta_rtt", 1), ("delta_rtt_sliced", RTT_SLICES)):
        delta_stages(
            bench,
            name,
            f"floor_http_{name}",
            with_peer=False,
            lookback_s=0,
            rtt_ms=args.rtt_ms,
            window_slices=slices,
        )

    period_end = (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=0)
    time.sleep(max(0.0, period_end.timestamp() - time.time()))
    bench.stage("reconcile", "reconcile", {"period_end": period_end.isoformat()})
    bench.peer(
        "datacompy_peer.py",
        "peer_datacompy",
        {
            "period_end": period_end.isoformat(),
            "currency_exponents": _currency_exponents(),
        },
    )
    # Last of the main database's stages, so that every stage before them sees the same tables as
    # in runs made before they existed.
    scale_delta_stages(bench)
    ui_stage(bench)
    if args.airflow:
        airflow_stage(bench)


def delta_stages(
    bench: Bench,
    name: str,
    floor_name: str,
    *,
    with_peer: bool,
    lookback_s: float = 600,
    rtt_ms: int = 0,
    window_slices: int = 1,
    mutations: int | None = None,
    before_timed: Callable[[], None] | None = None,
) -> None:
    """Mutate 1% of the invoices (or `mutations` of them; untimed), run the incremental sync from the
    stored cursor (minus `lookback_s`), then its HTTP floor on the same events window (and dlt on the
    rows it changed). With `rtt_ms`, both wait that long for every response (set after the untimed
    warm-up); the sync reads its window in `window_slices` concurrent slices. `before_timed` runs
    after the warm-up, right before the timed sync (`bench.ab_tables`' prewarm)."""
    if name in bench.args.skip or (rtt_ms and bench.args.rtt_ms <= 0):
        return
    latest_end = bench.delta_end or bench.window_end
    if latest_end is None:
        raise RuntimeError("the delta needs the cold sync's window end")
    time.sleep(max(0.0, latest_end.timestamp() + 1 - time.time()))
    mutation = bench.mutate(mutations or max(1, bench.args.invoices // 100))
    bench.raw.setdefault("mutation", mutation)
    bench.raw[f"{name}_mutation"] = mutation
    delta_end = datetime.fromtimestamp(mutation["at"] + 1, UTC)
    bench.delta_end = delta_end
    time.sleep(max(0.0, delta_end.timestamp() - time.time()))
    # Untimed, as before the cold sync: the sandbox renders the fresh events once (on these same two
    # cores, ~0.85 s at 1,000,000), so the delta and its floor both read them warm.
    bench.stage(
        "floor_http",
        f"warm_{name}",
        {
            **_events_listing(),
            "window_start": (latest_end - timedelta(seconds=lookback_s)).isoformat(),
            "window_end": delta_end.isoformat(),
        },
    )
    if before_timed is not None:
        before_timed()
    if rtt_ms:
        bench.set_rtt(rtt_ms)
    try:
        delta = bench.stage(
            "sync",
            name,
            {
                "run_id": f"bench-{name}",
                "window_end": delta_end.isoformat(),
                "lookback_s": lookback_s,
                "window_slices": window_slices,
                "rtt_ms": rtt_ms,
            },
        )
        if not delta:
            return
        summary = delta["extra"]
        bench.stage(
            "floor_http",
            floor_name,
            {
                **_events_listing(),
                "window_start": summary["window_start"],
                "window_end": summary["window_end"],
                "rtt_ms": rtt_ms,
            },
        )
    finally:
        if rtt_ms:
            bench.set_rtt(0)
    batch_ids = summary.get("first_batch_id"), summary.get("last_batch_id")
    if with_peer and batch_ids[0] is not None:
        dumps = {t: bench.workdir / f"{name}_{t}.csv" for t in INVOICE_TABLES}
        for table, path in dumps.items():
            bench.dump_rows(table, "sync_batch_id BETWEEN %s AND %s", batch_ids, path)
        bench.peer(
            "dlt_peer.py",
            "peer_dlt_delta",
            {"dataset": "bench_dlt", "tables": bench.dlt_tables(dumps), "records": delta["records"]},
        )


def scale_delta_stages(bench: Bench) -> None:
    """Settled deltas of each of `--scale-deltas` sizes, smallest first, `--scale-rounds` of each:
    their seconds per record say whether the delta's cost grows with the delta. The same sizes in
    runs at other N (`python -m bench.scaling`) say whether it grows with the table. A size's row is
    its median round. `--skip delta_scale` skips them all."""
    if "delta_scale" in bench.args.skip:
        return
    for mutations in bench.args.scale_deltas:
        name = f"delta_scale_{mutations}"
        if name in bench.args.skip:
            continue
        stages = (f"warm_{name}", name, f"floor_http_{name}")
        rounds = []
        for _ in range(bench.args.scale_rounds):
            bench.vacuum_analyze(INVOICE_TABLES, key=f"vacuum_analyze_before_{name}")
            delta_stages(bench, name, stages[2], with_peer=False, lookback_s=0, mutations=mutations)
            if any("seconds" not in bench.raw.get(stage, {}) for stage in stages):
                break  # failed: its failure stays in the results
            rounds.append({stage: bench.raw[stage] for stage in stages})
        else:
            keep_median_round(bench.raw, name, rounds)


def keep_median_round(raw: dict[str, Any], name: str, rounds: list[dict[str, dict[str, Any]]]) -> None:
    """Put the round whose delta took the median seconds (the lower one of an even count) in `raw`,
    each round's figures in its delta's `extra.rounds`."""
    by_seconds = sorted(range(len(rounds)), key=lambda i: float(rounds[i][name]["seconds"]))
    median = rounds[by_seconds[(len(rounds) - 1) // 2]]
    raw.update(median)
    raw[name]["extra"] = {
        **raw[name].get("extra", {}),
        "rounds": [
            {
                "seconds": found[name]["seconds"],
                "records": found[name]["records"],
                "process_cpu_seconds": found[name].get("extra", {}).get("process_cpu_seconds"),
                "disk_read_mb_timed": found[name].get("extra", {}).get("disk_read_mb_timed"),
                "floor_seconds": found[f"floor_http_{name}"]["seconds"],
            }
            for found in rounds
        ],
    }


def default_scale_deltas(invoices: int) -> list[int]:
    """0.1%, 1% and 5% of the invoices (at least one mutation each, no size twice)."""
    return sorted({max(1, invoices * per_mille // 1000) for per_mille in (1, 10, 50)})


def _mutation_counts(text: str) -> list[int]:
    counts = sorted({int(part) for part in text.split(",") if part.strip()})
    if any(count < 1 or count > 1_000_000 for count in counts):
        raise argparse.ArgumentTypeError(
            f"--scale-deltas: each size must be 1..1,000,000 mutations, got {text!r}"
        )
    return counts


def _events_listing() -> dict[str, Any]:
    """The floor stage's parameters for the invoices stream's event listing."""
    from erp_sync.streams import get_stream

    types = get_stream("invoices").incremental.event_types
    return {"path": "/v1/events", "extra_query": [("types[]", t) for t in types]}


def ui_stage(bench: Bench) -> None:
    """The Drift reports page with 10,000 discrepancies, in its own seeded database."""
    if "ui_drift_page" in bench.args.skip:
        return
    if not (PROJECT_DIR / "plugins" / "drift_reports" / "app.py").exists():
        bench.notes.append("ui_drift_page skipped: plugins/drift_reports not present")
        return
    main_dsn = bench.dsn
    bench.dsn = bench.create_database("_ui")
    try:
        bench.stage("ui_drift_page", "ui_drift_page", {})
    finally:
        bench.dsn = main_dsn


def airflow_stage(bench: Bench) -> None:
    """One `airflow dags test saas_to_erp_sync` on a small window (the new invoices of a fresh
    mutation) into its own database: Airflow's own overhead, next to the pipeline's time for it."""
    if "airflow_dags_test" in bench.args.skip or shutil.which("airflow") is None:
        bench.notes.append("airflow_dags_test skipped (no airflow on PATH or --skip)")
        return
    if not os.environ.get("AIRFLOW_CONN_SFTP_BACKUP"):
        bench.notes.append(
            "airflow_dags_test skipped: no AIRFLOW_CONN_SFTP_BACKUP (scripts/bench.sh sets it)"
        )
        return
    mutation = bench.mutate(max(1, bench.args.invoices // 1000))
    start = datetime.fromtimestamp(mutation["at"], UTC)
    end = start + timedelta(seconds=1)
    time.sleep(max(0.0, end.timestamp() - time.time()))
    dsn = bench.create_database("_af")
    ns = f"{bench.namespace}-af"
    bench.namespaces.append(ns)
    env = bench.env()
    env["AIRFLOW_CONN_SAAS_API"] = json.dumps(
        {
            "conn_type": "http",
            "host": bench.base_url,
            "password": SECRET_KEY,
            "extra": {"auth": "secret_key", "timeout": 30},
        }
    )
    env["AIRFLOW_CONN_ERP_STAGING"] = json.dumps(
        {
            "conn_type": "postgres",
            "host": "127.0.0.1",
            "port": 5432,
            "login": "postgres",
            "schema": dsn.rsplit("/", 1)[1],
        }
    )
    env["AIRFLOW_CONN_SYNC_STATE"] = json.dumps(
        {
            "conn_type": "redis",
            "host": "127.0.0.1",
            "port": 6379,
            "extra": {"db": 0, "namespace": ns},
        }
    )
    conf = {"streams": ["invoices"], "window_start": start.isoformat(), "window_end": end.isoformat()}
    log_path = bench.workdir / "airflow_dags_test.log"
    print("[bench] airflow_dags_test ...", flush=True)
    child = run_child(
        ["airflow", "dags", "test", "saas_to_erp_sync", "-c", json.dumps(conf)],
        env=env,
        log_path=log_path,
        timeout_s=min(bench.args.timeout, 900),
        cwd=PROJECT_DIR,
        abort_on="up_for_retry",  # a failed task would wait out its retry delay (minutes): stop instead
    )
    text = log_path.read_text(errors="replace")
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT coalesce(sum(extracted), 0) FROM erp_sync.sync_batches")
        extracted = int(cur.fetchone()[0])
    conn.close()
    ok = child.returncode == 0
    bench.raw["airflow_dags_test"] = {
        "records": extracted,
        "seconds": child.wall_seconds,
        "peak_rss_mb": child.tree_peak_rss_mb,
        "extra": {
            "exit": child.returncode,
            "conf": conf,
            "pipeline_seconds": _logged_seconds(text),
            "states": _task_states(text),
        },
    }
    if not ok:
        bench.notes.append(f"airflow_dags_test exited {child.returncode}; log tail in the JSON")
        bench.raw["airflow_dags_test"]["log_tail"] = child.log_tail[-1500:]


def _logged_seconds(text: str) -> float | None:
    """The pipeline's own seconds from the task log's summary table line for invoices, if found."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 9 and parts[0].endswith("invoices") and parts[1] in ("full", "incremental"):
            try:
                return float(parts[-1])
            except ValueError:
                continue
    return None


def _task_states(text: str) -> dict[str, str]:
    states: dict[str, str] = {}
    for line in text.splitlines():
        if "Marking task as" in line and "task_id=" in line:
            task = line.split("task_id=", 1)[1].split(",", 1)[0]
            states[task] = line.split("Marking task as", 1)[1].split(".", 1)[0].strip()
    return states


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--invoices", type=int, default=int(os.environ.get("BENCH_INVOICES", "1000000")))
    parser.add_argument(
        "--smoke", action="store_true", help="2,000 invoices: the whole run in about a minute"
    )
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument(
        "--batch-records",
        type=int,
        # unset: the pipeline's own sizes by mode (5,000 for a full refresh, 2,500 for a delta)
        default=int(os.environ["BENCH_BATCH_RECORDS"]) if os.environ.get("BENCH_BATCH_RECORDS") else None,
    )
    parser.add_argument(
        "--skip", default=os.environ.get("BENCH_SKIP", ""), help="comma-separated stage names"
    )
    parser.add_argument(
        "--profile",
        default=os.environ.get("BENCH_PROFILE", ""),
        help="comma-separated stage names to run under pyinstrument (report in bench/results)",
    )
    parser.add_argument(
        "--sandbox-cache",
        type=int,
        default=int(os.environ.get("BENCH_SANDBOX_CACHE", "0")),
        help="objects the sandbox keeps serialised (default: 3 per invoice, at most 4,000,000: ~6 GB at"
        " 1,000,000 invoices, so every pass after the warm-up serves pre-serialised JSON)",
    )
    parser.add_argument(
        "--gil-profile",
        type=lambda text: {name for name in text.split(",") if name},
        default=set(),
        help="stages to sample with py-spy --gil (every thread's CPU by function; collapsed stacks)",
    )
    parser.add_argument(
        "--sql-log",
        type=lambda text: {name for name in text.split(",") if name},
        default=set(),
        help="stages whose Postgres statements of 2 ms or more are logged with their durations",
    )
    parser.add_argument(
        "--drop-caches-before",
        type=lambda text: {name for name in text.split(",") if name},
        default=set(),
        help="stages before which the kernel's page cache is dropped (root): they read Postgres from disk",
    )
    parser.add_argument(
        "--rtt-ms",
        type=int,
        default=int(os.environ.get("BENCH_RTT_MS", "100")),
        help="the round trip delta_rtt and delta_rtt_sliced wait for on every response (0: skip them)",
    )
    parser.add_argument(
        "--scale-deltas",
        type=_mutation_counts,
        default=(
            _mutation_counts(os.environ["BENCH_SCALE_DELTAS"])
            if os.environ.get("BENCH_SCALE_DELTAS")
            else None
        ),
        help="comma-separated mutation counts, one settled delta each (delta_scale_<M>; default 0.1%%,"
        " 1%% and 5%% of --invoices); give the same sizes to runs at other N to compare them",
    )
    parser.add_argument(
        "--scale-rounds",
        type=int,
        default=int(os.environ.get("BENCH_SCALE_ROUNDS", "3")),
        help="rounds of each scale delta; its row is the median round (each round's figures in its extra)",
    )
    parser.add_argument("--no-airflow", dest="airflow", action="store_false")
    parser.add_argument("--keep", action="store_true", help="keep the database, Redis keys and work files")
    parser.add_argument("--timeout", type=float, default=float(os.environ.get("BENCH_STAGE_TIMEOUT", "3600")))
    parser.add_argument("--results-dir", default=str(BENCH_DIR / "results"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.invoices = 2_000
    if args.scale_rounds < 1:
        parser.error(f"--scale-rounds must be at least 1, got {args.scale_rounds}")
    if args.scale_deltas is None:
        args.scale_deltas = default_scale_deltas(args.invoices)
    if args.sandbox_cache <= 0:
        args.sandbox_cache = min(3 * args.invoices + 100_000, 4_000_000)
    args.skip = {s for s in args.skip.split(",") if s}
    args.profile = {s for s in args.profile.split(",") if s}
    args.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    workdir = BENCH_DIR / "work" / args.stamp
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(args=args, workdir=workdir, results_dir=results_dir)
    machine_before = report.machine_info()
    machine_before["calibration_at_start"] = calibrate.calibrate()
    started = time.perf_counter()
    try:
        run(bench)
    finally:
        total = time.perf_counter() - started
        machine_before["calibration_at_end"] = calibrate.calibrate()
        document = report.build(
            bench.raw,
            args=vars(args),
            notes=bench.notes,
            machine=machine_before,
            dsn=bench.dsn or PG_ADMIN_DSN,
            total_seconds=total,
        )
        json_path = results_dir / f"{args.stamp}.json"
        json_path.write_text(json.dumps(document, default=_json_default, indent=1))
        md = report.markdown(document)
        (results_dir / f"{args.stamp}.md").write_text(md)
        bench.teardown()
        print(md)
        print(f"[bench] results: {json_path} and .md", flush=True)
    return 0


def write_ab_document(path: Path, document: dict[str, Any]) -> None:
    """Write an interleaved A/B's document (`bench.ab_delta`, `bench.ab_tables`) as JSON, then print
    its summary and where it is."""
    path.write_text(json.dumps(document, default=_json_default, indent=1))
    print(json.dumps(document["summary"], indent=1))
    print(f"[bench] results: {path}", flush=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, set):
        return sorted(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
