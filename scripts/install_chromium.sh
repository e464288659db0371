#!/usr/bin/env bash
# Installs a headless-capable Chromium, which tests/test_report.py uses to open report.html
# (without it those checks are skipped). Debian/Ubuntu: `apt-get install chromium` as root;
# elsewhere install Chromium or Chrome by hand and put it on PATH (or set CHROMIUM=/path/to/it).
set -euo pipefail

for name in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$name" >/dev/null 2>&1; then
    echo "install_chromium: already installed: $(command -v "$name")"
    exit 0
  fi
done

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_chromium: no apt-get here; install Chromium by hand and put it on PATH" >&2
  exit 1
fi

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=sudo
  else
    echo "install_chromium: needs root (or sudo) to run apt-get" >&2
    exit 1
  fi
else
  SUDO=
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# Debian names the package `chromium`; Ubuntu's `chromium-browser` is a snap wrapper.
if ! $SUDO apt-get install -y -q --no-install-recommends chromium; then
  $SUDO apt-get install -y -q --no-install-recommends chromium-browser
fi

for name in chromium chromium-browser; do
  if command -v "$name" >/dev/null 2>&1; then
    "$name" --version || true
    exit 0
  fi
done
echo "install_chromium: apt-get finished but no chromium binary is on PATH" >&2
exit 1
