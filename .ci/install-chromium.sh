#!/usr/bin/env bash
# Installs Debian's chromium for the report's browser test (tests/test_analyze_browser.py).
# Idempotent: does nothing when a chromium is already on PATH. Called by .ci/run.
#   bash .ci/install-chromium.sh
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi  # CI images run as root; a dev box may not
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
