#!/usr/bin/env bash
# AIRFLOW_HOME inside the project, SQLite metadata, examples off; migrations and pools. Idempotent.
set -euo pipefail
source "$(dirname "$0")/env.sh"
mkdir -p "$AIRFLOW_HOME" "$RUN_DIR"
stamp="$AIRFLOW_HOME/.db-migrated-$(airflow version 2>/dev/null | tail -1)"
if [ ! -f "$stamp" ]; then
  echo "migrating the Airflow metadata database ($AIRFLOW__DATABASE__SQL_ALCHEMY_CONN) ..."
  airflow db migrate >"$RUN_DIR/airflow-db-migrate.log" 2>&1 || { tail -20 "$RUN_DIR/airflow-db-migrate.log"; exit 1; }
  touch "$stamp"
fi
# The rate budget for the SaaS API: parallel stream tasks share these slots (the real scheduler
# never runs a task whose pool does not exist).
airflow pools set saas_api 4 "Concurrent SaaS API extract tasks" >/dev/null 2>&1 || true
