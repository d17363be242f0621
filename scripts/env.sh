# Sourced by every Makefile recipe and script: project paths and the Airflow/connection defaults.
# Every AIRFLOW_CONN_* here is a default only: a value already in the environment wins, so the same
# commands run against any Stripe-compatible API, Postgres, Redis and SFTP server.
PROJECT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PROJECT_DIR
export RUN_DIR="$PROJECT_DIR/.run"
export VENV="$PROJECT_DIR/.venv"
export PATH="$VENV/bin:$PATH"
export PYTHONPATH="$PROJECT_DIR/include${PYTHONPATH:+:$PYTHONPATH}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$PROJECT_DIR/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$PROJECT_DIR/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$PROJECT_DIR/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="${AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION:-True}"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin,auditor:viewer}"
export AIRFLOW__LOGGING__LOGGING_LEVEL="${AIRFLOW__LOGGING__LOGGING_LEVEL:-INFO}"
export NO_PROXY="${NO_PROXY:-127.0.0.1,localhost}"

export SANDBOX_PORT="${SANDBOX_PORT:-18111}"
export SANDBOX_INVOICES="${SANDBOX_INVOICES:-500}"
export SANDBOX_SECRET_KEY="${SANDBOX_SECRET_KEY:-sk_test_demo_4eC39HqLyjWDarjtT1zdp7dc}"
export SANDBOX_CLIENT_ID="${SANDBOX_CLIENT_ID:-erp-sync-demo}"
export SANDBOX_CLIENT_SECRET="${SANDBOX_CLIENT_SECRET:-demo-client-secret-7Qx2VwR9}"
export SFTP_PORT="${SFTP_PORT:-2222}"
export ERP_DEMO_DB="${ERP_DEMO_DB:-erp_demo}"

default_env() {  # default_env NAME VALUE: set NAME only when the environment has not
  if [ -z "${!1:-}" ]; then export "$1=$2"; fi
}
default_env AIRFLOW_CONN_SAAS_API "{\"conn_type\": \"http\", \"host\": \"http://127.0.0.1:$SANDBOX_PORT\", \"password\": \"$SANDBOX_SECRET_KEY\", \"extra\": {\"auth\": \"secret_key\", \"timeout\": 30, \"max_rps\": 200}}"
default_env AIRFLOW_CONN_ORDERS_API "{\"conn_type\": \"http\", \"host\": \"http://127.0.0.1:$SANDBOX_PORT\", \"login\": \"$SANDBOX_CLIENT_ID\", \"password\": \"$SANDBOX_CLIENT_SECRET\", \"extra\": {\"auth\": \"oauth2\", \"client_id\": \"$SANDBOX_CLIENT_ID\", \"token_url\": \"http://127.0.0.1:$SANDBOX_PORT/oauth/token\"}}"
default_env AIRFLOW_CONN_ERP_STAGING "{\"conn_type\": \"postgres\", \"host\": \"127.0.0.1\", \"port\": 5432, \"login\": \"postgres\", \"schema\": \"$ERP_DEMO_DB\"}"
default_env AIRFLOW_CONN_SYNC_STATE "{\"conn_type\": \"redis\", \"host\": \"127.0.0.1\", \"port\": 6379, \"extra\": {\"db\": 1, \"namespace\": \"erpsync-demo\"}}"
export AIRFLOW_CONN_SAAS_API AIRFLOW_CONN_ERP_STAGING AIRFLOW_CONN_SYNC_STATE
# AIRFLOW_CONN_SFTP_BACKUP defaults to the local sshd started by scripts/sftp_server.sh (its host key
# is generated on first start, so the default is computed there: see sftp_conn_default below).
sftp_conn_default() {
  if [ -z "${AIRFLOW_CONN_SFTP_BACKUP:-}" ] && [ -x "$PROJECT_DIR/scripts/sftp_server.sh" ]; then
    AIRFLOW_CONN_SFTP_BACKUP="$("$PROJECT_DIR/scripts/sftp_server.sh" env 2>/dev/null | sed -n "s/^AIRFLOW_CONN_SFTP_BACKUP='\(.*\)'$/\1/p")"
    export AIRFLOW_CONN_SFTP_BACKUP
  fi
}
