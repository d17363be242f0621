#!/usr/bin/env bash
# Every test: unit, DAG integrity, integration (real Postgres, Redis, SFTP, sandbox over TCP) and
# browser (Debian's Chromium against a real api-server). Extra arguments go to pytest.
set -uo pipefail
source "$(dirname "$0")/env.sh"
cd "$PROJECT_DIR"
mkdir -p test-output
# One-time system packages the integration and browser tests need (apt-get, idempotent).
[ -x scripts/sftp_server.sh ] && { scripts/sftp_server.sh install || exit 1; }
[ -x scripts/browser_setup.sh ] && { scripts/browser_setup.sh || exit 1; }
python -m pytest tests -p no:cacheprovider --junitxml=test-output/junit.xml "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$rc"
