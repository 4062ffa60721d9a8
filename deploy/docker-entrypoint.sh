#!/usr/bin/env bash
# Entry point of the AutoScale images: fill in the runner's advertised address, then run the command.
#
# A scaled runner (docker compose up --scale cloud_runner=3) must advertise its own address, not the
# service name that every replica shares. Compose cannot compute it, so the compose file sets
# AUTOSCALE_ADVERTISE_URL=http://{hostname}:8003 and this script puts the container's hostname in
# place of {hostname}: Docker's DNS resolves it to this replica on the compose network.
set -euo pipefail

if [[ "${AUTOSCALE_ADVERTISE_URL:-}" == *"{hostname}"* ]]; then
    AUTOSCALE_ADVERTISE_URL="${AUTOSCALE_ADVERTISE_URL//\{hostname\}/$(hostname)}"
    export AUTOSCALE_ADVERTISE_URL
fi

exec "$@"
