#!/usr/bin/env bash
# The nightly job end to end on this machine: a fresh demo staging database, the sandbox SaaS, a
# first (full) sync, a day of realistic changes in the SaaS, the nightly incremental sync, the
# reconciliation, and a summary a person can read. Services stay up afterwards for `make ui`.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$PROJECT_DIR"
sftp_conn_default
LOGS="$RUN_DIR/demo"; mkdir -p "$LOGS"
step() { printf '\n== %s\n' "$*"; }

step "fresh demo staging database '$ERP_DEMO_DB' and Redis db 1"
psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$ERP_DEMO_DB\" WITH (FORCE)" \
  -c "CREATE DATABASE \"$ERP_DEMO_DB\"" >/dev/null
python - <<'PY'
import json, os, redis
extra = json.loads(os.environ["AIRFLOW_CONN_SYNC_STATE"]).get("extra", {})
redis.Redis(host="127.0.0.1", port=6379, db=int(extra.get("db", 1))).flushdb()
PY

step "sandbox SaaS on 127.0.0.1:$SANDBOX_PORT with $SANDBOX_INVOICES invoices"
scripts/sandbox_ctl.sh restart

run_dag() {  # run_dag DAG_ID LOG CONF
  local dag=$1 logf=$2 conf=${3:-"{}"}
  echo "airflow dags test $dag -c '$conf'   (log: $logf)"
  if airflow dags test "$dag" -c "$conf" >"$logf" 2>&1; then
    grep -E "DagRun Finished|state=" "$logf" | tail -1 || true
  else
    echo "  -> $dag FAILED; last lines of the log:"; tail -25 "$logf"; return 1
  fi
}

step "1. first sync: no cursor yet, so every stream is listed in full"
run_dag saas_to_erp_sync "$LOGS/sync-1-full.log"

step "2. a day passes in the SaaS: payments, voids, refunds, credit notes, new customers and invoices"
python -m erp_sync.sandbox.cli mutate --base-url "http://127.0.0.1:$SANDBOX_PORT" --count 40

step "3. the nightly incremental sync: deltas from /v1/events since the cursor"
run_dag saas_to_erp_sync "$LOGS/sync-2-incremental.log"

step "4. reconciliation: an independent re-read of the SaaS against ERP staging"
run_dag erp_drift_reconciliation "$LOGS/reconcile.log" || echo "  (the reconciliation failed: see above)"

step "summary"
python -m erp_sync.demo_summary --logs "$LOGS"
