#!/usr/bin/env bash
# Make sure Postgres and Redis answer on 127.0.0.1:5432/6379; start them when installed but stopped,
# otherwise stop with the command that installs them. Then start SFTP (sshd) when asked.
set -euo pipefail
source "$(dirname "$0")/env.sh"

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || python3 - <<'PY'
import socket, sys
s = socket.socket(); s.settimeout(2)
sys.exit(0 if s.connect_ex(("127.0.0.1", 5432)) == 0 else 1)
PY
}
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if ! pg_up; then
  if ls /etc/postgresql/*/main >/dev/null 2>&1 && command -v pg_ctlcluster >/dev/null; then
    echo "starting PostgreSQL ..."
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
    for _ in $(seq 30); do pg_up && break; sleep 1; done
  else
    echo "PostgreSQL is not installed. Install it with: apt-get install -y postgresql" >&2; exit 1
  fi
fi
if ! redis_up; then
  if command -v redis-server >/dev/null; then
    echo "starting Redis ..."
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir "${TMPDIR:-/tmp}" --logfile "$RUN_DIR/redis.log"
    for _ in $(seq 30); do redis_up && break; sleep 1; done
  else
    echo "Redis is not installed. Install it with: apt-get install -y redis-server" >&2; exit 1
  fi
fi
pg_up && redis_up && echo "Postgres 127.0.0.1:5432 and Redis 127.0.0.1:6379 are up"
