"""Peer: datacompy diffs the same two sides the reconciliation compares.

Run with bench/.venv-peers/bin/python:  python bench/peers/datacompy_peer.py CONFIG_JSON
CONFIG: base_url, secret_key, page_size, dsn, period_end (ISO), currency_exponents, out.
SaaS side: the invoices of the period re-read over HTTP (requests + orjson, as the floor does);
ERP side: the staging rows by SQL; both as (source_id, currency_code, status, total in integer
thousandths of a major unit). Then `datacompy.PandasCompare` joined on source_id, with the
record-level outputs (rows only on one side, mismatching rows) materialised. Times: the whole, and
the compare alone.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import datacompy
import orjson
import pandas as pd
import psycopg2
import requests


def saas_side(cfg: dict[str, Any]) -> pd.DataFrame:
    exponents = cfg["currency_exponents"]
    end = int(datetime.fromisoformat(cfg["period_end"]).timestamp())
    session = requests.Session()
    session.trust_env = False
    headers = {"Authorization": f"Bearer {cfg['secret_key']}"}
    url = cfg["base_url"].rstrip("/") + "/v1/invoices"
    cols: dict[str, list[Any]] = {"source_id": [], "currency_code": [], "status": [], "total_amount": []}
    after = None
    while True:
        params = [("created[lt]", str(end)), ("limit", str(cfg["page_size"]))]
        if after:
            params.append(("starting_after", after))
        response = session.get(url, params=params, headers=headers, timeout=(5, 60))
        response.raise_for_status()
        page = orjson.loads(response.content)
        for inv in page["data"]:
            code = inv["currency"].upper()
            cols["source_id"].append(inv["id"])
            cols["currency_code"].append(code)
            cols["status"].append(inv["status"])
            cols["total_amount"].append(inv["total"] * 10 ** (3 - exponents.get(code, 2)))
        if not page.get("has_more") or not page["data"]:
            break
        after = page["data"][-1]["id"]
    return pd.DataFrame(cols)


def erp_side(cfg: dict[str, Any]) -> pd.DataFrame:
    conn = psycopg2.connect(cfg["dsn"])
    with conn.cursor() as cur:
        cur.execute(
            "SELECT source_id, currency_code::text, status, (total_amount * 1000)::bigint"
            " FROM erp_staging.ar_invoices WHERE issued_at < %s",
            (cfg["period_end"],),
        )
        rows = cur.fetchall()
    conn.close()
    return pd.DataFrame(rows, columns=["source_id", "currency_code", "status", "total_amount"])


def main(config_path: str) -> int:
    cfg = json.loads(Path(config_path).read_text())
    started = time.perf_counter()
    saas = saas_side(cfg)
    erp = erp_side(cfg)
    read_seconds = time.perf_counter() - started
    compare_started = time.perf_counter()
    compare = datacompy.PandasCompare(saas, erp, join_columns="source_id", df1_name="saas", df2_name="erp")
    only_saas = len(compare.df1_unq_rows)
    only_erp = len(compare.df2_unq_rows)
    mismatches = len(compare.all_mismatch())
    compare_seconds = time.perf_counter() - compare_started
    result = {
        "records": len(saas),
        "seconds": time.perf_counter() - started,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ru_maxrss_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "extra": {
            "datacompy": datacompy.__version__,
            "saas_rows": len(saas),
            "erp_rows": len(erp),
            "only_in_saas": only_saas,
            "only_in_erp": only_erp,
            "mismatching_rows": mismatches,
            "read_seconds": round(read_seconds, 3),
            "compare_seconds": round(compare_seconds, 3),
        },
    }
    Path(cfg["out"]).write_text(json.dumps(result, default=str, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
