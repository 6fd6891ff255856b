#!/usr/bin/env bash
# Install headless chromium for tests/test_report_browser.py when it is missing (Debian/Ubuntu, as root).
# The test drives chromium over the DevTools pipe; chromium-driver is installed too for local debugging.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  echo "chromium present: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y chromium chromium-driver  # recommends bring fonts, so screenshots are readable
/usr/bin/chromium --version
