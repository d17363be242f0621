"""Peer: dlt merge-loads the same mapped rows into the same Postgres (its own dataset/schema).

Run with bench/.venv-peers/bin/python (dlt is never installed into the project's venv):
    python bench/peers/dlt_peer.py CONFIG_JSON
CONFIG: dsn, workdir, out, dataset, tables: [{name, csv, columns: [[name, pg_type], ...], primary_key}].
The CSV files are the staging rows the pipeline wrote (dumped with COPY, untimed); they are parsed
into typed dicts (Decimal money, aware datetimes) -- the records a dlt source would yield -- and
loaded with write_disposition="merge". Timed: the whole `pipeline.run` (extract, normalize, load).
"""

from __future__ import annotations

import csv
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")

import dlt
from dlt.destinations import postgres


def _converter(pg_type: str) -> Callable[[str], Any]:
    if pg_type == "numeric":
        return Decimal
    if pg_type in ("bigint", "integer", "smallint"):
        return int
    if pg_type.startswith("timestamp"):
        return datetime.fromisoformat
    return str


def _rows(path: Path, columns: list[list[str]]) -> Iterator[list[dict[str, Any]]]:
    names = [c[0] for c in columns]
    convert = [_converter(c[1]) for c in columns]
    chunk: list[dict[str, Any]] = []
    with path.open(newline="") as fh:
        for raw in csv.reader(fh):
            chunk.append(
                {n: (None if v == "" else f(v)) for n, f, v in zip(names, convert, raw, strict=True)}
            )
            if len(chunk) >= 10_000:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _dsn_with_password(dsn: str) -> str:
    """dlt insists on a password; the bench's Postgres uses trust auth, which ignores it."""
    scheme, rest = dsn.split("://", 1)
    userinfo, _, hostpart = rest.rpartition("@")
    if not userinfo or ":" in userinfo:
        return dsn
    return f"{scheme}://{userinfo}:trust-auth-ignores-this@{hostpart}"


def main(config_path: str) -> int:
    cfg = json.loads(Path(config_path).read_text())
    pipeline = dlt.pipeline(
        pipeline_name=cfg["dataset"],
        destination=postgres(credentials=_dsn_with_password(cfg["dsn"])),
        dataset_name=cfg["dataset"],
        pipelines_dir=str(Path(cfg["workdir"]) / "dlt"),
    )
    resources = []
    for table in cfg["tables"]:
        resources.append(
            dlt.resource(
                _rows(Path(table["csv"]), table["columns"]),
                name=table["name"],
                write_disposition="merge",
                primary_key=table["primary_key"],
            )
        )
    started = time.perf_counter()
    info = pipeline.run(resources)
    seconds = time.perf_counter() - started
    counts = {}
    with pipeline.sql_client() as client:
        for table in cfg["tables"]:
            counts[table["name"]] = client.execute_sql(f"SELECT count(*) FROM {table['name']}")[0][0]
    result = {
        "records": int(cfg["records"]),
        "seconds": seconds,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ru_maxrss_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "extra": {"rows_in_dataset": counts, "dlt": dlt.__version__, "loads": len(info.loads_ids)},
    }
    Path(cfg["out"]).write_text(json.dumps(result, default=str, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
