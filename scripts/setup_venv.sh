#!/usr/bin/env bash
# Create .venv and install the pinned dependencies (constraints.txt is the lock). Idempotent: does
# nothing when the lock has not changed since the last install.
set -euo pipefail
source "$(dirname "$0")/env.sh"
UV_VERSION=0.13.9
stamp="$VENV/.installed-$(cat "$PROJECT_DIR"/requirements*.txt "$PROJECT_DIR/constraints.txt" | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0
command -v python3.11 >/dev/null || command -v python3 >/dev/null || { echo "Python 3.11 is required"; exit 1; }
PY=$(command -v python3.11 || command -v python3)
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { echo "Python 3.11 is required (found $("$PY" --version))"; exit 1; }
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
[ -x "$VENV/bin/uv" ] || "$VENV/bin/python" -m pip install -q "uv==$UV_VERSION"
echo "installing pinned dependencies into .venv ..."
"$VENV/bin/uv" pip install -q --python "$VENV/bin/python" -r "$PROJECT_DIR/requirements-dev.txt" \
  -c "$PROJECT_DIR/constraints.txt"
rm -f "$VENV"/.installed-*
touch "$stamp"
