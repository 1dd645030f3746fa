#!/usr/bin/env bash
# System packages some tests need (Debian/Ubuntu). Idempotent: installs only what is missing
# and exits 0 when there is nothing to do. Run by scripts/test.sh before pytest.
set -euo pipefail

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
updated=""
apt_install() {
    if [[ -z $updated ]]; then $SUDO apt-get update -qq; updated=1; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Headless Chromium: tests/report/test_render.py opens the HTML report offline and
# screenshots it; tests/ratings/test_browser.py rates images in the ratings web app.
if [[ ! -x /usr/bin/chromium ]]; then
    echo "install-test-deps: installing chromium (headless browser tests)"
    apt_install chromium fonts-dejavu-core
fi

# chromedriver: the W3C WebDriver server tests/ratings/test_browser.py drives Chromium with.
if ! command -v chromedriver >/dev/null 2>&1; then
    echo "install-test-deps: installing chromium-driver (ratings browser test)"
    apt_install chromium-driver
fi
# slurm-wlm and munge: tests/slurm/ start a single-node Slurm cluster (slurmctld + slurmd,
# own munge key and socket, no cgroups) and run GPU worker jobs of the tiny profile on the CPU.
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    echo "install-test-deps: installing slurm-wlm and munge (Slurm worker tests)"
    apt_install slurm-wlm munge
fi
exit 0
