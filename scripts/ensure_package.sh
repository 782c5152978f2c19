#!/usr/bin/env bash
# Install a Debian package when the program it brings is missing:
#   scripts/ensure_package.sh PACKAGE PROGRAM
# `chromium` (/usr/bin/chromium) for the browser tests (tests/browser: Playwright drives it
# through executable_path, so `playwright install` is never needed, and cannot download a browser
# on machines without internet access); `espeak-ng` for the turn set (scripts/make_turn_set.py).
set -euo pipefail

PACKAGE=${1:?usage: ensure_package.sh PACKAGE PROGRAM}
PROGRAM=${2:?usage: ensure_package.sh PACKAGE PROGRAM}

if [ -x "$PROGRAM" ] || command -v "$PROGRAM" >/dev/null 2>&1; then
    echo "$PACKAGE: found $PROGRAM"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "$PACKAGE: $PROGRAM is missing and this user can neither install packages nor sudo" >&2
    echo "$PACKAGE: as root, run: apt-get update && apt-get install -y $PACKAGE" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "$PACKAGE: $PROGRAM is missing and apt-get is not available (not Debian/Ubuntu?);" >&2
    echo "$PACKAGE: install it by hand" >&2
    exit 1
fi

echo "$PACKAGE: installing Debian's $PACKAGE package (apt-get)..."
export DEBIAN_FRONTEND=noninteractive
if ! "${SUDO[@]}" apt-get update -q; then
    echo "$PACKAGE: apt-get update failed; check the machine's package sources" >&2
    exit 1
fi
if ! "${SUDO[@]}" apt-get install -y -q --no-install-recommends "$PACKAGE"; then
    echo "$PACKAGE: apt-get install $PACKAGE failed (see above)" >&2
    exit 1
fi
if ! { [ -x "$PROGRAM" ] || command -v "$PROGRAM" >/dev/null 2>&1; }; then
    echo "$PACKAGE: the package installed but $PROGRAM is still missing" >&2
    exit 1
fi
echo "$PACKAGE: installed $PROGRAM"
