#!/usr/bin/env bash
# Start the telemetry service with the phone's real sensors in the foreground (termux-services:
# sv/autoscale-telemetry/run): battery current and voltage (termux-battery-status), Wi-Fi RSSI
# (termux-wifi-connectioninfo), co-runner CPU and memory load (psutil). It is what `autoscale telemetry`
# runs, started through uvicorn so that it needs neither onnx nor ONNX Runtime (a telemetry-only phone).
set -euo pipefail

CONFIG_DIR="${HOME}/.config/autoscale"
set -a  # every setting in the file is exported to the service
# shellcheck source=deploy/termux/env.example
. "$CONFIG_DIR/env"
set +a
# shellcheck source=/dev/null
. "$(cat "$CONFIG_DIR/venv")/bin/activate"

termux-wake-lock
mkdir -p "${AUTOSCALE_DATA_DIR:-$HOME/.local/share/autoscale}"
exec python -m uvicorn --factory services.telemetry.app:create_app \
    --host "${AUTOSCALE_HOST:-0.0.0.0}" --port "${AUTOSCALE_TELEMETRY_PORT:-8004}" --no-access-log
