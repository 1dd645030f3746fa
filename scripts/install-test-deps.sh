#!/usr/bin/env bash
# System packages some tests need (Debian/Ubuntu). Idempotent: installs only what is missing
# and exits 0 when there is nothing to do. Run by scripts/test.sh before pytest.
set -euo pipefail

# Headless Chromium: tests/report/test_render.py opens the HTML report offline and
# screenshots it, to prove it renders with its embedded images.
if [[ ! -x /usr/bin/chromium ]]; then
    echo "install-test-deps: installing chromium (headless report rendering test)"
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        chromium fonts-dejavu-core >/dev/null
fi
exit 0
