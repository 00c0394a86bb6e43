#!/usr/bin/env bash
# Make sure headless Chromium is on PATH for the registry UI test (tests/test_registry_ui.py,
# pipelines/ui.py): nothing to do when `chromium` or `chromium-browser` is there; otherwise install
# Debian's `chromium` package with apt-get (as root, or through passwordless sudo).  When that is
# impossible it fails and says why, so `make test-slow` stops instead of skipping the test.
#
#   infra/ensure-chromium.sh         # env: CHROMIUM_PACKAGE (default chromium)
set -euo pipefail
PACKAGE=${CHROMIUM_PACKAGE:-chromium}

found() { command -v chromium 2>/dev/null || command -v chromium-browser 2>/dev/null; }
fail() { echo "ensure-chromium: Chromium is not installed and cannot be installed here: $*" >&2; exit 1; }

if exe=$(found); then
  echo "ensure-chromium: $exe"
  exit 0
fi
command -v apt-get >/dev/null 2>&1 \
  || fail "no apt-get (not Debian/Ubuntu); install Chromium so that 'chromium' or 'chromium-browser' is on PATH"
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    fail "installing it needs root (this is uid $(id -u), without passwordless sudo); run as root: apt-get install -y $PACKAGE"
  fi
fi
echo "ensure-chromium: chromium not on PATH; installing the $PACKAGE package with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq || fail "apt-get update failed (no network or no package sources?)"
"${SUDO[@]}" apt-get install -y -qq "$PACKAGE" \
  || fail "apt-get install -y $PACKAGE failed (see above)"
exe=$(found) || fail "the $PACKAGE package installed no 'chromium' or 'chromium-browser' on PATH"
echo "ensure-chromium: installed $exe"
