#!/usr/bin/env bash
# Install bubblewrap for verifier/sandbox.py when it is missing (Debian/Ubuntu, as root). Without it the
# sandbox refuses to run code ("sandbox unavailable"), so tests/test_sandbox_escapes.py needs it.
# The sandbox uses --size (a size-limited tmpfs) and --disable-userns: bubblewrap >= 0.8 (Debian 12 has 0.8.0).
set -euo pipefail
if [ -x /usr/bin/bwrap ]; then
  echo "bubblewrap present: $(/usr/bin/bwrap --version)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y bubblewrap
/usr/bin/bwrap --version
