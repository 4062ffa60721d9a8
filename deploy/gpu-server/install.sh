#!/usr/bin/env bash
# Install the cloud runner and telemetry on a Linux GPU server (NVIDIA driver installed; README.md).
#
#   sudo bash deploy/gpu-server/install.sh
#
# Creates the autoscale user, a virtualenv in /opt/autoscale-mesh/venv with the serving core and the gpu
# extra (onnxruntime-gpu with CUDA and cuDNN from their wheels, nvidia-ml-py), pinned by constraints.txt,
# the settings file /etc/autoscale/autoscale.env (fill in the tokens) and the two systemd units.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST=/opt/autoscale-mesh
PYTHON="${PYTHON:-python3.11}"

if [ "$(id -u)" -ne 0 ]; then
    echo "error: run as root (sudo): it creates a user, /opt/autoscale-mesh and systemd units" >&2
    exit 1
fi
command -v nvidia-smi >/dev/null || echo "warning: nvidia-smi not found: is the NVIDIA driver installed?" >&2

id autoscale >/dev/null 2>&1 || useradd --system --home-dir /var/lib/autoscale --shell /usr/sbin/nologin autoscale
mkdir -p "$DEST" /etc/autoscale/profiles
rm -rf "$DEST/src" && cp -r "$REPO" "$DEST/src"

"$PYTHON" -m venv "$DEST/venv"
# The gpu image's list: the serving core with onnxruntime-gpu in place of onnxruntime (both ship the
# onnxruntime module; one environment holds one of them).
"$PYTHON" "$REPO/scripts/image_requirements.py" --extras gpu > "$DEST/requirements.txt"
"$DEST/venv/bin/pip" install -c "$REPO/constraints.txt" -r "$DEST/requirements.txt"
PIP_CONSTRAINT="$REPO/constraints.txt" "$DEST/venv/bin/pip" install --no-deps "$DEST/src"

if [ ! -f /etc/autoscale/autoscale.env ]; then
    install -m 640 -g autoscale "$REPO/deploy/gpu-server/autoscale.env.example" /etc/autoscale/autoscale.env
fi
install -m 644 "$REPO/deploy/gpu-server/gpu_server.yaml" /etc/autoscale/profiles/gpu_server.yaml
install -m 644 "$REPO/deploy/gpu-server/autoscale-cloud-runner.service" /etc/systemd/system/
install -m 644 "$REPO/deploy/gpu-server/autoscale-telemetry.service" /etc/systemd/system/
systemctl daemon-reload

echo "installed. Check the GPU: $DEST/venv/bin/python -c 'import onnxruntime as o; o.preload_dlls(); print(o.get_available_providers())'"
echo "Then fill in /etc/autoscale/autoscale.env and: systemctl enable --now autoscale-cloud-runner autoscale-telemetry"
