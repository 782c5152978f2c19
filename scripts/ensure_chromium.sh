#!/usr/bin/env bash
# Install Debian's `chromium` for the browser tests (tests/browser) when it is missing.
# Playwright drives it through executable_path=/usr/bin/chromium; `playwright install` is never
# needed (and cannot download a browser on machines without internet access).
set -euo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

if [ -x "$CHROMIUM" ]; then
    echo "chromium: found $CHROMIUM ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "chromium: $CHROMIUM is missing and this user can neither install packages nor sudo" >&2
    echo "chromium: as root, run: apt-get update && apt-get install -y chromium" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium: $CHROMIUM is missing and apt-get is not available (not Debian/Ubuntu?);" >&2
    echo "chromium: install Chromium by hand, or set CHROMIUM=/path/to/chromium" >&2
    exit 1
fi

echo "chromium: installing Debian's chromium package (apt-get)..."
export DEBIAN_FRONTEND=noninteractive
if ! "${SUDO[@]}" apt-get update -q; then
    echo "chromium: apt-get update failed; check the machine's package sources" >&2
    exit 1
fi
if ! "${SUDO[@]}" apt-get install -y -q --no-install-recommends chromium; then
    echo "chromium: apt-get install chromium failed (see above)" >&2
    exit 1
fi
if [ ! -x "$CHROMIUM" ]; then
    echo "chromium: the package installed but $CHROMIUM is still missing" >&2
    exit 1
fi
echo "chromium: installed $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
