"""The closing summary of `make demo`: what each sync run did per stream, the drift verdict, and
where the report and the backups are. Reads only the staging database (the record of what happened).

    python -m erp_sync.demo_summary [--logs DIR]
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any
from urllib.parse import urlparse

import psycopg2


def dsn_from_env(var: str = "AIRFLOW_CONN_ERP_STAGING") -> str:
    raw = os.environ[var]
    if raw.lstrip().startswith("{"):
        conn = json.loads(raw)
        parts = {
            "host": conn.get("host") or "127.0.0.1",
            "port": conn.get("port") or 5432,
            "user": conn.get("login") or "postgres",
            "dbname": conn.get("schema") or "postgres",
        }
        if conn.get("password"):
            parts["password"] = conn["password"]
        return " ".join(f"{k}={v}" for k, v in parts.items())
    url = urlparse(raw)
    return f"host={url.hostname} port={url.port or 5432} user={url.username} dbname={url.path.lstrip('/')}"


def _rows(cur: Any, sql: str) -> list[tuple[Any, ...]]:
    cur.execute(sql)
    return list(cur.fetchall())


def _table_exists(cur: Any, name: str) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
    return bool(cur.fetchone()[0])


def print_runs(cur: Any) -> None:
    runs = _rows(
        cur,
        """
        SELECT run_id, min(committed_at) AS first_commit, stream, count(*) AS batches,
               sum(extracted), sum(loaded_new), sum(loaded_changed), sum(skipped_unchanged), sum(rejected)
        FROM erp_sync.sync_batches GROUP BY run_id, stream ORDER BY first_commit, stream""",
    )
    if not runs:
        print("no sync batches were committed")
        return
    current = None
    header = (
        "  "
        + f"{'stream':<14}{'extracted':>10}{'new':>8}{'changed':>9}"
        + (f"{'unchanged':>11}{'rejected':>10}{'batches':>9}")
    )
    for run_id, _, stream, batches, ext, new, chg, unch, rej in runs:
        if run_id != current:
            current = run_id
            print(f"\nsync run {run_id}")
            print(header)
        ok = "" if ext == new + chg + unch + rej else "  CONSERVATION VIOLATED"
        print(f"  {stream:<14}{ext:>10}{new:>8}{chg:>9}{unch:>11}{rej:>10}{batches:>9}{ok}")


def print_staging(cur: Any) -> None:
    print("\nERP staging (rows PENDING for the ERP importer / total):")
    for table in (
        "customers",
        "ar_invoices",
        "ar_invoice_lines",
        "ar_receipts",
        "ar_refunds",
        "ar_credit_memos",
    ):
        pending, total = _rows(
            cur,
            f"""
            SELECT count(*) FILTER (WHERE interface_status = 'PENDING'), count(*) FROM erp_staging.{table}""",  # noqa: S608
        )[0]
        print(f"  erp_staging.{table:<18} {pending:>7} / {total}")
    rej = _rows(
        cur, "SELECT reason_code, count(*) FROM erp_sync.rejections WHERE status = 'PENDING' GROUP BY 1"
    )
    if rej:
        print("  quarantined, awaiting replay: " + ", ".join(f"{code}: {n}" for code, n in rej))


def print_drift(cur: Any) -> None:
    reports = _rows(
        cur,
        """
        SELECT report_id, version, status, item_count, period_start, period_end, backup_path, content_sha256
        FROM erp_sync.drift_reports ORDER BY report_id DESC LIMIT 3""",
    )
    if not reports:
        print("\ndrift: no report was written")
        return
    print("\ndrift reports (newest first):")
    for rid, version, status, items, start, end, backup, sha in reports:
        print(
            f"  #{rid} v{version} {status:<6} {items} item(s)  "
            f"period [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M})"
        )
        print(f"      sha256 {sha}  backup: {backup or '(not backed up)'}")
    print("  read them in the UI: make ui → Drift reports")


def print_backups(cur: Any) -> None:
    done, pending, sample = _rows(
        cur,
        """
        SELECT count(*) FILTER (WHERE backed_up_at IS NOT NULL), count(*) FILTER (WHERE backed_up_at IS NULL),
               max(remote_path) FROM erp_sync.outbox""",
    )[0]
    print(f"\nbackups: {done} raw page(s) on SFTP and verified, {pending} waiting in the outbox")
    if sample:
        print(f"  e.g. {sample}")
    sftp_root = os.path.join(os.environ.get("PROJECT_DIR", "."), ".run", "sftp", "data")
    if os.path.isdir(sftp_root):
        print(f"  the local SFTP server stores them under {sftp_root}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--logs", default=None, help="where the demo's task logs are")
    args = parser.parse_args()
    with psycopg2.connect(dsn_from_env()) as conn, conn.cursor() as cur:
        if not _table_exists(cur, "erp_sync.sync_batches"):
            print("the staging database has no erp_sync schema: the sync did not get as far as migrating")
            return
        print_runs(cur)
        print_staging(cur)
        print_drift(cur)
        print_backups(cur)
    if args.logs:
        print(f"\ntask logs of this demo: {args.logs}")


if __name__ == "__main__":
    main()
