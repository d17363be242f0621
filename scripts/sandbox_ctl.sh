#!/usr/bin/env bash
# Start/stop the sandbox SaaS for the demo and `make ui` (tests start their own on free ports).
#   scripts/sandbox_ctl.sh start|stop|restart|status
set -euo pipefail
source "$(dirname "$0")/env.sh"
PID_FILE="$RUN_DIR/sandbox.pid"; LOG_FILE="$RUN_DIR/sandbox.log"
mkdir -p "$RUN_DIR"

running() { [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

start() {
  running && { echo "sandbox already running (pid $(cat "$PID_FILE"))"; return 0; }
  nohup python -m erp_sync.sandbox serve --host 127.0.0.1 --port "$SANDBOX_PORT" \
    --invoices "$SANDBOX_INVOICES" --seed "${SANDBOX_SEED:-42}" --secret-key "$SANDBOX_SECRET_KEY" \
    --client-id "$SANDBOX_CLIENT_ID" --client-secret "$SANDBOX_CLIENT_SECRET" \
    >"$LOG_FILE" 2>&1 &
  echo $! >"$PID_FILE"
  for _ in $(seq 120); do
    grep -q "SANDBOX READY" "$LOG_FILE" 2>/dev/null && { grep "SANDBOX READY" "$LOG_FILE"; return 0; }
    running || { echo "sandbox failed to start:"; tail -20 "$LOG_FILE"; return 1; }
    sleep 0.5
  done
  echo "sandbox did not report READY within 60 s (log: $LOG_FILE)"; return 1
}

stop() {
  if running; then kill "$(cat "$PID_FILE")"; sleep 0.5; fi
  rm -f "$PID_FILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) running && echo "running (pid $(cat "$PID_FILE"))" || { echo "stopped"; exit 1; } ;;
  *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
