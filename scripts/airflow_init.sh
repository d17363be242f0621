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
# Airflow wrote its own defaults into airflow.cfg on first use (dags under $AIRFLOW_HOME, examples
# on): point them at the project, so a bare `airflow` CLI without scripts/env.sh sees the same DAGs.
cfg="$AIRFLOW_HOME/airflow.cfg"
if [ -f "$cfg" ]; then
  sed -i -e "s#^dags_folder = .*#dags_folder = $PROJECT_DIR/dags#" \
    -e "s#^plugins_folder = .*#plugins_folder = $PROJECT_DIR/plugins#" \
    -e "s#^load_examples = .*#load_examples = False#" "$cfg"
fi
# Airflow 3 lists DAGs from the metadata DB: parse and store them now (~8 s), so `airflow dags list`
# and the UI show them before any scheduler or dag-processor has run.
airflow dags reserialize >"$RUN_DIR/airflow-dags-reserialize.log" 2>&1 ||
  { tail -20 "$RUN_DIR/airflow-dags-reserialize.log"; exit 1; }
# The rate budget for the SaaS API: parallel stream tasks share these slots (the real scheduler
# never runs a task whose pool does not exist).
airflow pools set saas_api 4 "Concurrent SaaS API extract tasks" >/dev/null 2>&1 || true
