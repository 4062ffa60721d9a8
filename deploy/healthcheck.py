#!/usr/bin/env python3
"""Container health check: GET a service's /readyz; exit 0 on 200, 1 otherwise (stdlib only, no curl).

    healthcheck.py [URL]

Without a URL it checks the service this container runs: it reads the command of PID 1
(``autoscale decider``, ``autoscale runner --role cloud``, ``autoscale telemetry``) and the service's
port (``AUTOSCALE_<ROLE>_PORT``, else the default). /readyz is open (no token), and the decider answers
200 while it serves, degraded or not, and 503 only when it cannot serve at all.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_PORTS = {"decider": 8000, "edge": 8001, "peer": 8002, "cloud": 8003, "telemetry": 8004}


def role_of(argv: list[str]) -> str:
    """The service an ``autoscale`` command line runs (decider when it cannot tell)."""
    if "runner" in argv:
        for i, arg in enumerate(argv):
            if arg == "--role" and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith("--role="):
                return arg.split("=", 1)[1]
        return "edge"  # `autoscale runner`'s default role
    return "telemetry" if "telemetry" in argv else "decider"


def default_url() -> str:
    argv = Path("/proc/1/cmdline").read_bytes().decode(errors="replace").split("\0")
    role = role_of(argv)
    port = os.environ.get(f"AUTOSCALE_{role.upper()}_PORT") or str(DEFAULT_PORTS.get(role, 8000))
    return f"http://127.0.0.1:{port}/readyz"


def main() -> int:
    url = sys.argv[1] if len(sys.argv) > 1 else default_url()
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:  # HTTPError (503) is a URLError
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
