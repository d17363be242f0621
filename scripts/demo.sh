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

run_dag() {  # run_dag DAG_ID LOG CONF -- fails when the run does not end in success
  local dag=$1 logf=$2 conf=${3:-"{}"}
  echo "airflow dags test $dag -c '$conf'   (log: $logf)"
  airflow dags test "$dag" -c "$conf" >"$logf" 2>&1 || true
  local finished
  finished=$(grep -aE "DagRun Finished" "$logf" | tail -1)
  echo "$finished" | sed -E "s/.*(dag_id=[^,]*).*(run_duration=[^,]*), (state=[^,]*).*/  \1 \3 \2/"
  if ! echo "$finished" | grep -q "state=success"; then
    echo "  -> $dag did not succeed; the failing tasks' errors:"
    grep -aE "\[error|Error:|Exception:" "$logf" | grep -av "No tasks to run" | tail -8
    return 1
  fi
}

step "1. first sync: no cursor yet, so every stream is listed in full"
run_dag saas_to_erp_sync "$LOGS/sync-1-full.log" \
  '{"streams": ["customers", "invoices", "charges", "refunds", "credit_notes", "orders"]}'

step "2. a day passes in the SaaS: payments, voids, refunds, credit notes, new customers and invoices"
python - <<PY
from erp_sync.sandbox.testing import AdminClient
done = AdminClient("http://127.0.0.1:$SANDBOX_PORT").mutate(40)
print("  applied:", ", ".join(f"{kind} x{n}" for kind, n in sorted(done["counts"].items())))
PY
sleep 1  # windows end on a whole second: let the changes' second pass

step "3. the nightly incremental sync: deltas from /v1/events since the cursor"
run_dag saas_to_erp_sync "$LOGS/sync-2-incremental.log" \
  '{"streams": ["customers", "invoices", "charges", "refunds", "credit_notes", "orders"]}'

step "4. reconciliation: an independent re-read of the SaaS against ERP staging"
run_dag erp_drift_reconciliation "$LOGS/reconcile.log" || echo "  (the reconciliation failed: see above)"

step "summary"
python -m erp_sync.demo_summary --logs "$LOGS"
