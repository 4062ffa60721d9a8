"""Transfer learning between devices (paper Sec. VI-C): which source action each destination
action inherits its Q values from, and the transferred table. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from services.core.policies.qlearning.export import ValidatedTable
from services.core.policies.qlearning.models import TransferReport


def _dvfs_steps(actions: Iterable[str]) -> dict[str, int]:
    """base id (runner/processor/precision) -> number of DVFS steps (max index + 1)."""
    steps: dict[str, int] = {}
    for a in actions:
        base, _, d = a.partition("@")
        if d:
            steps[base] = max(steps.get(base, 0), int(d) + 1)
    return steps


def transfer_mapping(src_actions: Iterable[str], dest_actions: Iterable[str]) -> dict[str, str]:
    """For each destination action, the source action whose Q values it inherits.

    The paper transfers a table trained on one phone to another (Sec. VI-C) to speed up
    convergence; the phones differ in DVFS steps and processors. Rules, by destination action:

    1. the same action id exists on the source (cloud and peer targets, DSP, fixed targets,
       DVFS steps when both devices have the same number of steps): take it;
    2. same runner/processor/precision with DVFS steps on both sides: take the source step at
       the same *relative* position, round(i_dest / (N_dest - 1) * (N_src - 1)) -- endpoints
       map to endpoints (lowest to lowest, top to top), e.g. Mi8Pro CPU 23 steps -> Galaxy
       S10e 21 steps (its step 20 takes Mi8Pro's 22, step 10 takes 11), GPU 7 -> 9;
    3. a fixed-frequency destination action (no ``@step``) takes the source's top step, and a
       fixed-frequency source action feeds only the destination's top step (a fixed target
       runs at the governor's top frequency);
    4. otherwise (a processor or precision the source does not have) nothing: the entry keeps
       its lazy random initial value. Source actions no destination action maps to (e.g. the
       DSP when the destination has none) are dropped.
    """
    src = list(src_actions)
    src_set = set(src)
    src_steps = _dvfs_steps(src)
    dest = list(dest_actions)
    dest_steps = _dvfs_steps(dest)
    mapping: dict[str, str] = {}
    for d in dest:
        base, _, step = d.partition("@")
        ns = src_steps.get(base)
        if d in src_set and not (step and ns != dest_steps[base]):
            mapping[d] = d  # same action; DVFS steps only when both sides have as many steps
            continue
        if ns:
            if step:
                nd = dest_steps[base]
                rel = int(step) / (nd - 1) if nd > 1 else 1.0
            else:
                rel = 1.0
            si = round(rel * (ns - 1))
            cand = f"{base}@{si}"
            if cand in src_set:
                mapping[d] = cand
            else:  # sparse source step list: nearest existing step
                present = [int(a.partition("@")[2]) for a in src if a.partition("@")[0] == base and "@" in a]
                if present:
                    mapping[d] = f"{base}@{min(present, key=lambda x: (abs(x - si), -x))}"
        elif base in src_set and step and int(step) == dest_steps[base] - 1:
            mapping[d] = base
    return mapping


def transfer_table(
    src: ValidatedTable, to_device: str, dest_actions: Sequence[str]
) -> tuple[ValidatedTable, TransferReport]:
    """Initialise ``to_device``'s table from ``src`` keeping only the destination's actions.

    Visit counts start at 0: they count this device's own experience, and the Q values are
    only a starting point (the paper's "learning transfer").
    """
    mapping = transfer_mapping(src.actions, dest_actions)
    used_src = set(mapping.values())
    out: dict[int, dict[str, tuple[float, int]]] = {}
    copied = dropped = 0
    for s, row in src.states.items():
        new: dict[str, tuple[float, int]] = {}
        for d, a in mapping.items():
            if a in row:
                new[d] = (row[a][0], 0)
        if new:
            out[s] = new
        copied += len(new)
        dropped += sum(1 for a in row if a not in used_src)
    table = ValidatedTable(device=to_device, actions=tuple(sorted(dest_actions)), states=out)
    report = TransferReport(
        from_device=src.device,
        to_device=to_device,
        mapping=dict(sorted(mapping.items())),
        entries_copied=copied,
        entries_dropped=dropped,
        states=len(out),
    )
    return table, report
