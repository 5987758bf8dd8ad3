#!/usr/bin/env bash
# Regenerates the dashboard screenshots in docs/screenshots/ from a real run:
# `hottopic dev` with the wordcount example, a burst of 400 events, headless
# Chromium (integration/dashboard; it installs Debian's chromium if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/screenshots
HOTTOPIC_SCREENSHOTS="$PWD/docs/screenshots" go test -count=1 -run TestDashboard ./integration/dashboard/
ls -l docs/screenshots
