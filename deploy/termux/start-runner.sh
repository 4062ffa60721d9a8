#!/usr/bin/env bash
# Start this device's runner (edge or peer, RUNNER_ROLE) in the foreground, as termux-services
# does (sv/autoscale-runner/run). Holds a wake lock so Android does not suspend it with the screen off.
set -euo pipefail

CONFIG_DIR="${HOME}/.config/autoscale"
set -a  # every setting in the file is exported to the service
# shellcheck source=deploy/termux/env.example
. "$CONFIG_DIR/env"
set +a
# shellcheck source=/dev/null
. "$(cat "$CONFIG_DIR/venv")/bin/activate"

ROLE="${RUNNER_ROLE:-edge}"
case "$ROLE" in
    edge) PORT="${AUTOSCALE_EDGE_PORT:-8001}" ;;
    peer) PORT="${AUTOSCALE_PEER_PORT:-8002}" ;;
    *) echo "RUNNER_ROLE must be edge or peer, got '$ROLE'" >&2; exit 2 ;;
esac

if [ -z "${AUTOSCALE_ADVERTISE_URL:-}" ]; then
    # The phone's address on its Wi-Fi, from termux-api (the `ip` field of the connection info).
    IP="$(termux-wifi-connectioninfo | python -c 'import json, sys; print(json.load(sys.stdin).get("ip", ""))')"
    if [ -z "$IP" ] || [ "$IP" = "0.0.0.0" ]; then
        echo "no Wi-Fi address: connect to Wi-Fi or set AUTOSCALE_ADVERTISE_URL in $CONFIG_DIR/env" >&2
        exit 1
    fi
    export AUTOSCALE_ADVERTISE_URL="http://${IP}:${PORT}"
fi

termux-wake-lock
mkdir -p "${AUTOSCALE_DATA_DIR:-$HOME/.local/share/autoscale}"
exec autoscale runner --role "$ROLE"
