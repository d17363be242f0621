#!/usr/bin/env bash
# Installs what the browser tests need: Debian's Chromium + chromedriver (apt). selenium is in the
# lock (requirements-dev.txt / constraints.txt), installed by scripts/setup_venv.sh.
# Idempotent: does nothing that is already done. No browser is downloaded at test run time.
set -euo pipefail

VENV_PY="${VENV_PY:-$(dirname "$0")/../.venv/bin/python}"

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium chromium-driver fonts-dejavu-core >/dev/null
fi

chromium --version 2>/dev/null
chromedriver --version
"$VENV_PY" -c "import selenium; print('selenium', selenium.__version__)"
