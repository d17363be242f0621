#!/usr/bin/env bash
# Airflow standalone on 127.0.0.1:8080 (scheduler, dag-processor, api-server, triggerer), with the
# demo's connections. Users: admin (admin role) and auditor (viewer role); passwords printed below.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$PROJECT_DIR"
sftp_conn_default
scripts/sandbox_ctl.sh start
PASSWORDS="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$PASSWORDS"
if [ ! -f "$PASSWORDS" ]; then
  python - "$PASSWORDS" <<'PY'
import json, secrets, sys
json.dump({"admin": secrets.token_urlsafe(12), "auditor": secrets.token_urlsafe(12)}, open(sys.argv[1], "w"))
PY
fi
export AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=8080
echo "Airflow UI: http://127.0.0.1:8080   (Drift reports: in the navigation, or /drift-reports/)"
python - "$PASSWORDS" <<'PY'
import json, sys
for user, password in json.load(open(sys.argv[1])).items():
    print(f"  login: {user} / {password}")
PY
echo "Ctrl-C stops it."
exec airflow standalone
