#!/usr/bin/env bash
# Install Prometheus and promtool from Debian's package (the metrics tests run against the
# real thing). Idempotent: does nothing when both binaries are already on PATH.
set -euo pipefail
# shellcheck source=.ci/apt.sh
source "$(dirname "$0")/apt.sh"

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    echo "prometheus already installed: $(prometheus --version 2>&1 | head -n1)"
    exit 0
fi

# --no-install-recommends: the server and promtool only, no exporters or web assets.
apt_install "prometheus" prometheus

# The package enables a system service on machines with systemd; the tests start their own
# Prometheus on a free port, so a running system instance is not needed (and is left alone).
command -v prometheus >/dev/null && command -v promtool >/dev/null
echo "installed: $(prometheus --version 2>&1 | head -n1)"
