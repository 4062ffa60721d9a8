#!/usr/bin/env bash
# Install docker-compose, shellcheck and systemd-analyze from Debian's packages (tests/test_deploy*.py run
# them: `docker-compose config` validates docker-compose.yml without a Docker engine; shellcheck lints the
# Termux and GPU-server scripts; systemd-analyze verifies the GPU server's units). Idempotent: does nothing
# when all three are already on PATH.
set -euo pipefail
# shellcheck source=.ci/apt.sh
source "$(dirname "$0")/apt.sh"

if command -v docker-compose >/dev/null 2>&1 && command -v shellcheck >/dev/null 2>&1 && command -v systemd-analyze >/dev/null 2>&1; then
    echo "deploy tools already installed: $(docker-compose version --short 2>/dev/null), shellcheck $(shellcheck --version | sed -n 's/^version: //p')"
    exit 0
fi

# docker-compose here is the client only (Debian's 1.29): it parses and validates; nothing is started.
apt_install "the deploy tools" docker-compose shellcheck systemd

command -v docker-compose >/dev/null && command -v shellcheck >/dev/null
echo "installed: docker-compose $(docker-compose version --short 2>/dev/null), shellcheck $(shellcheck --version | sed -n 's/^version: //p')"
