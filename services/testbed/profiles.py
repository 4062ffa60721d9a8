"""The testbed's three profiles from one calibrated edge profile.

The peer and cloud runners are this host's other CPUs, so their profiles are the edge's processor as
calibrated (a tablet and a server of the same silicon), without a radio: the phone's radio (the edge
profile's) is what the links and eq. 4 use. The text is copied line by line, so every number keeps
its ``# source:`` comment.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from services.common.config_files import load_profile
from services.core.profiles import ProfileError


def derive_remote_profiles(edge_path: Path, profiles_dir: Path) -> str:
    """Put the edge profile and its ``_peer`` (tablet) and ``_cloud`` (server) twins in ``profiles_dir``;
    returns the edge profile's name."""
    edge = load_profile(edge_path)
    if edge.kind != "phone" or edge.radio is None:
        raise ProfileError(str(edge_path), "kind", "the testbed's edge must be a phone profile (it needs a radio)")
    profiles_dir.mkdir(parents=True, exist_ok=True)
    target = profiles_dir / f"{edge.name}.yaml"
    if edge_path.resolve() != target.resolve():
        shutil.copyfile(edge_path, target)
    text = target.read_text().splitlines()
    body = text[: next(i for i, line in enumerate(text) if line.startswith("radio:"))]
    for suffix, kind, role in (("peer", "tablet", "Wi-Fi Direct peer"), ("cloud", "server", "cloud server")):
        lines = [f"# The testbed's {role}: {edge.name}'s processor as calibrated, run on this host's other CPUs."]
        for line in body:
            if line.startswith("name:"):
                line = f"name: {edge.name}_{suffix}"
            elif line.startswith("kind:"):
                line = f"kind: {kind}"
            lines.append(line)
        path = profiles_dir / f"{edge.name}_{suffix}.yaml"
        path.write_text("\n".join(lines) + "\n")
        load_profile(path)  # refuse to start a mesh on a profile that does not load
    return edge.name
