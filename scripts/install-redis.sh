#!/usr/bin/env bash
# Install the Redis server used by the shared-store tests (tests/store/) and by
# `python -m load.multiproc`: Debian's redis-server package. Idempotent: does nothing
# when /usr/bin/redis-server exists. The tests start their own redis-server on a free
# loopback port with persistence off; the Debian service this package may start is not
# used (and is stopped again where systemd/service can do so without side effects).
#
#   scripts/install-redis.sh          # as root (or with sudo available)
#
# Exit status: 0 when /usr/bin/redis-server is present afterwards, 1 otherwise (the
# tests that need it then skip, loudly, with the reason).
set -u

if [ -x /usr/bin/redis-server ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install-redis: /usr/bin/redis-server is missing and this user cannot run apt-get (not root, no sudo)" >&2
        exit 1
    fi
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-redis: /usr/bin/redis-server is missing and apt-get is not available on this system" >&2
    exit 1
fi

echo "install-redis: installing redis-server with apt-get ..." >&2
export DEBIAN_FRONTEND=noninteractive
# Don't let the package's maintainer scripts start the system-wide service (port 6379):
# the tests run their own instances. policy-rc.d is honoured by invoke-rc.d.
POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null && $SUDO chmod +x "$POLICY" && ADDED_POLICY=1
fi
$SUDO apt-get update -qq >&2 || echo "install-redis: apt-get update failed" >&2
$SUDO apt-get install -y -qq --no-install-recommends redis-server >&2
STATUS=$?
if [ "$ADDED_POLICY" = "1" ]; then
    $SUDO rm -f "$POLICY"
fi

if [ -x /usr/bin/redis-server ]; then
    echo "install-redis: $(/usr/bin/redis-server --version 2>/dev/null | head -1) installed" >&2
    exit 0
fi
echo "install-redis: apt-get did not provide /usr/bin/redis-server (exit $STATUS)" >&2
exit 1
