"""The requirements of one Docker image: the serving core plus the named extras, from pyproject.toml.

    python scripts/image_requirements.py --extras tvm > requirements.txt
    pip install -c constraints.txt -r requirements.txt

deploy/Dockerfile installs these (pinned by constraints.txt) in a layer of their own before it copies
the code, so a code change rebuilds only the last layers. With the ``gpu`` extra ``onnxruntime`` is
left out: ``onnxruntime-gpu`` provides the same module, and both in one environment overwrite each
other's files. Extras that name the project itself (``autoscale-mesh[otel]``) are expanded.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_REPLACES = "onnxruntime"


def _name(requirement: str) -> str:
    """The distribution a requirement names, PEP 503-normalised: ``onnxruntime-gpu[cuda]>=1`` -> ``onnxruntime-gpu``."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def image_requirements(extras: list[str], pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """Requirement lines of the serving core plus ``extras``, in pyproject order, without duplicates."""
    project = tomllib.loads(pyproject.read_text())["project"]
    me, optional = _name(project["name"]), project.get("optional-dependencies", {})
    out: list[str] = list(project["dependencies"])
    pending, seen = list(extras), set[str]()
    while pending:
        extra = pending.pop(0).strip()
        if not extra or extra in seen:
            continue
        if extra not in optional:
            raise KeyError(f"unknown extra {extra!r}; pyproject.toml has {', '.join(sorted(optional))}")
        seen.add(extra)
        for requirement in optional[extra]:
            if _name(requirement) == me:  # autoscale-mesh[otel,tvm]: another extra's requirements
                inner = re.search(r"\[([^\]]*)\]", requirement)
                pending += inner.group(1).split(",") if inner else []
            elif requirement not in out:
                out.append(requirement)
    if "gpu" in seen:
        out = [r for r in out if _name(r) != GPU_REPLACES]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", default="", help="comma-separated extras, e.g. 'tvm' or 'gpu' (empty: the core)")
    args = parser.parse_args(argv)
    try:
        lines = image_requirements(args.extras.split(","))
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
