#!/bin/bash
# A/B of Postgres WAL settings on the cold sync at 1M: A = this machine's (max_wal_size 1GB, wal_compression off),
# B = max_wal_size 16GB, checkpoint_timeout 30min, wal_compression lz4. Order A B B A.
set -u
cd /work/bench15
SKIP=floor_http_full,floor_mget,peer_dlt_cold,floor_walk_full,replay,floor_http_replay,floor_walk_replay,peer_dlt_replay,warm_delta,delta,floor_http_delta,peer_dlt_delta,warm_delta_settled,delta_settled,floor_http_delta_settled,warm_delta_rtt,delta_rtt,floor_http_delta_rtt,warm_delta_rtt_sliced,delta_rtt_sliced,floor_http_delta_rtt_sliced,reconcile,peer_datacompy,ui_drift_page,airflow_dags_test
PSQL="psql -h 127.0.0.1 -U postgres -Atq"
setvariant() {
  if [ "$1" = B ]; then
    $PSQL -c "ALTER SYSTEM SET max_wal_size='16GB'" -c "ALTER SYSTEM SET checkpoint_timeout='30min'" -c "ALTER SYSTEM SET wal_compression='lz4'"
  else
    $PSQL -c "ALTER SYSTEM RESET max_wal_size" -c "ALTER SYSTEM RESET checkpoint_timeout" -c "ALTER SYSTEM RESET wal_compression"
  fi
  $PSQL -c "SELECT pg_reload_conf()" >/dev/null; sleep 1
  $PSQL -c "CHECKPOINT"
  echo "variant $1: $($PSQL -c "select string_agg(name||'='||setting, ' ') from pg_settings where name in ('max_wal_size','checkpoint_timeout','wal_compression')")"
}
for v in A B B A; do
  setvariant $v
  lsn0=$($PSQL -c "select pg_current_wal_lsn()")
  source scripts/env.sh
  scripts/bench.sh --no-airflow --skip $SKIP 2>&1 | grep -E "^\[bench\] (cold_sync|floor_copy):|results/" | sed "s/^/[$v] /"
  echo "[$v] WAL $($PSQL -c "select pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(),'$lsn0'))")"
done
setvariant A
