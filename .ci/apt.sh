#!/usr/bin/env bash
# Shared by the .ci/install-*.sh scripts: apt_install WHAT PACKAGE... installs Debian packages
# (without recommends), as root or through sudo, and names the command to run when neither works.
apt_install() {
    local what=$1
    shift
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            echo "error: installing $what needs root (or sudo): apt-get install -y $*" >&2
            exit 1
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update
    $sudo apt-get install -y --no-install-recommends "$@"
}
