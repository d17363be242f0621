#!/usr/bin/env bash
# `make bench`: the benchmark harness (bench/run.py) against a sandbox it seeds itself, a fresh
# Postgres database and its own Redis namespace. Measurements, not tests.
#   BENCH_INVOICES=1000000 (default) | scripts/bench.sh --smoke (2,000 invoices, about a minute)
#   other flags go to bench/run.py: --no-airflow, --skip a,b, --profile cold_sync,replay, --keep
# Peers (dlt, datacompy) live in their own venv, bench/.venv-peers, from bench/requirements-bench.txt.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$PROJECT_DIR"
# The bench's own SFTP server (port, keys, data), so a `make demo` on 2222 can run beside it.
export ERP_SFTP_PORT="${BENCH_SFTP_PORT:-2223}" ERP_SFTP_RUN_DIR="$PROJECT_DIR/.run/sftp-bench"
export BENCH_INVOICES="${BENCH_INVOICES:-1000000}"

PEERS="$PROJECT_DIR/bench/.venv-peers"
# bench/constraints-bench.txt pins every package of the peers' venv (regenerate it with
# `uv pip compile bench/requirements-bench.txt --python-version 3.11 -o bench/constraints-bench.txt`).
stamp="$PEERS/.installed-$(cat bench/requirements-bench.txt bench/constraints-bench.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[bench] installing the peers (dlt, datacompy) into $PEERS ..."
  "$VENV/bin/uv" venv --quiet --clear --python "$VENV/bin/python" "$PEERS"
  "$VENV/bin/uv" pip install --quiet --python "$PEERS/bin/python" -r bench/requirements-bench.txt \
    -c bench/constraints-bench.txt
  touch "$stamp"
fi
# pyinstrument profiles the stages named in --profile / BENCH_PROFILE (bench only, not a project dep).
"$VENV/bin/python" -c "import pyinstrument" 2>/dev/null ||
  "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" pyinstrument==5.1.3
# py-spy samples every thread's GIL holder for --gil-profile (bench only, not a project dep).
[ -x "$VENV/bin/py-spy" ] || "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" py-spy==0.4.3
# `airflow dags test` needs the migrated metadata DB; its backup task drains to the local SFTP server.
"$PROJECT_DIR/scripts/airflow_init.sh"
started_sftp=""
if [ -x "$PROJECT_DIR/scripts/sftp_server.sh" ] && ! "$PROJECT_DIR/scripts/sftp_server.sh" status >/dev/null 2>&1; then
  "$PROJECT_DIR/scripts/sftp_server.sh" start >/dev/null && started_sftp=1
fi
sftp_conn_default
trap '[ -n "$started_sftp" ] && "$PROJECT_DIR/scripts/sftp_server.sh" stop >/dev/null 2>&1 || true' EXIT
# `scripts/bench.sh ab-delta --a DIR --b DIR [--stage replay] ...`: the interleaved delta (or replay)
# A/B (bench/ab_delta.py). `scripts/bench.sh ab-tables [--small N --large N --mutations M --prewarm]`:
# the same deltas on two table sizes, interleaved (bench/ab_tables.py).
if [ "${1:-}" = "ab-delta" ]; then
  shift
  python -m bench.ab_delta "$@"
elif [ "${1:-}" = "ab-tables" ]; then
  shift
  python -m bench.ab_tables "$@"
else
  python -m bench.run "$@"
fi
