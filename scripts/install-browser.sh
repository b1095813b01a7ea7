#!/usr/bin/env bash
# Install the headless browser used by the playground test (tests/test_playground_browser.py):
# Debian's chromium and chromium-driver. Idempotent: does nothing when /usr/bin/chromium
# exists. Never downloads a browser build of its own (no `playwright install`).
#
#   scripts/install-browser.sh          # as root (or with sudo available)
#
# Exit status: 0 when chromium is present afterwards, 1 otherwise (the test then skips
# loudly, with the reason).
set -u

if [ -x /usr/bin/chromium ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install-browser: /usr/bin/chromium is missing and this user cannot run apt-get (not root, no sudo)" >&2
        exit 1
    fi
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: /usr/bin/chromium is missing and apt-get is not available on this system" >&2
    exit 1
fi

echo "install-browser: installing chromium and chromium-driver with apt-get ..." >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2 || echo "install-browser: apt-get update failed" >&2
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >&2

if [ -x /usr/bin/chromium ]; then
    echo "install-browser: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) installed" >&2
    exit 0
fi
echo "install-browser: apt-get did not provide /usr/bin/chromium" >&2
exit 1
