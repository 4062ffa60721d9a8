#!/usr/bin/env bash
# Install Prometheus and promtool from Debian's package (the metrics tests run against the
# real thing). Idempotent: does nothing when both binaries are already on PATH.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    echo "prometheus already installed: $(prometheus --version 2>&1 | head -n1)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "error: installing prometheus needs root (or sudo): apt-get install -y prometheus" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
# --no-install-recommends: the server and promtool only, no exporters or web assets.
$SUDO apt-get install -y --no-install-recommends prometheus

# The package enables a system service on machines with systemd; the tests start their own
# Prometheus on a free port, so a running system instance is not needed (and is left alone).
command -v prometheus >/dev/null && command -v promtool >/dev/null
echo "installed: $(prometheus --version 2>&1 | head -n1)"
