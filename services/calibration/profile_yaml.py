"""Write a calibrated profile in the documented format (docs/profiles.md), a ``# source:`` on every number.

A fitted number says ``measured on <host> <date> (fit MAPE x %, ±y %)``; anything the run could not
identify says ``assumed (<why>)``. The text is validated by the same model that generates
docs/profile.schema.json before it is written, so a file this writes always loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import yaml

from services.calibration.models import FitParam, ProfileKind
from services.core.profiles import DeviceProfile, LinkProfile, ProcessorProfile, RadioProfile, parse_profile

# A JSON string is a valid YAML double-quoted scalar: names and descriptions need no other escaping.


def _num(v: float) -> str:
    return f"{v:.6g}"


def _list(values: list[float]) -> str:
    return "[" + ", ".join(_num(v) for v in values) + "]"


@dataclass
class Provenance:
    """Who measured: the host and date every measured number cites, and the fit's overall error."""

    host: str
    date: str
    mape_pct: float

    def measured(self, detail: str) -> str:
        """A fact read from this host (a frequency, the thread count it was measured at)."""
        return f"# source: measured on {self.host} {self.date} ({detail})"

    def of(self, p: FitParam) -> str:
        """A parameter: fitted (with the fit's MAPE and its standard error) or assumed (with why)."""
        if p.source == "assumed":
            return f"# source: assumed ({p.why})"
        parts = [f"fit MAPE {self.mape_pct:.1f} %"]
        if p.rel_err_pct is not None:
            parts.append(f"±{p.rel_err_pct:.1f} % std. error")
        if p.why:
            parts.append(p.why)
        return f"# source: measured on {self.host} {self.date} ({'; '.join(parts)})"


@dataclass
class ProfileText:
    """The pieces of one calibrated profile file."""

    name: str
    kind: ProfileKind
    description: str
    processor: ProcessorProfile
    params: dict[str, FitParam]
    prov: Provenance
    freq_note: str  # where the frequency steps come from (set and measured, or the current one)
    threads_note: str
    radio: RadioProfile | None = None
    radio_note: str = ""
    base_power_w: float | None = None  # a phone's whole-device base power (not measured here)

    def render(self) -> str:
        lines = [
            f"# Calibrated by `autoscale calibrate` on {self.prov.host}, {self.prov.date}.",
            "# Latency numbers are fitted to measurements of the real engine on this host (least squares on",
            "# services/core/costmodel.py's own equations); see the fit report next to this file.",
            f"name: {self.name}",
            f"kind: {self.kind}",
            f"description: {json.dumps(self.description)}",
            "processors:",
            "  cpu:",
            *self._processor(),
        ]
        if self.base_power_w is not None:
            lines.append(f"base_power_w: {_num(self.base_power_w)}  # source: assumed ({self.radio_note})")
        if self.radio is not None:
            lines += ["radio:", *self._link("wifi", self.radio.wifi)]
            if self.radio.p2p is not None:
                lines += self._link("p2p", self.radio.p2p)
        return "\n".join(lines) + "\n"

    def _processor(self) -> list[str]:
        p, prm, prov = self.processor, self.params, self.prov
        ind = "    "
        out = [
            f"{ind}name: {json.dumps(p.name)}",
            f"{ind}cores: {p.cores}  {prov.measured(self.threads_note)}",
            f"{ind}utilisation: {_num(p.utilisation)}  # source: assumed (the measured host time is all busy time)",
        ]
        if p.dvfs is not None:
            out += [
                f"{ind}dvfs:",
                f"{ind}  steps: {p.dvfs.steps}  {prov.measured(self.freq_note)}",
                f"{ind}  freqs_ghz: {_list(p.dvfs.freqs_ghz)}  {prov.measured(self.freq_note)}",
                f"{ind}  busy_w: {_list(p.dvfs.busy_w)}  {prov.of(prm['dvfs.busy_w'])}",
            ]
        else:
            out.append(f"{ind}power_w: {_num(p.busy_power(None))}  {prov.of(prm['dvfs.busy_w'])}")
        out += [
            f"{ind}idle_w: {_num(p.idle_w)}  {prov.of(prm['idle_w'])}",
            f"{ind}throughput_gmacs:",
            *[
                f"{ind}  {q.value}: {_num(v)}  {prov.of(prm[f'throughput_gmacs.{q.value}'])}"
                for q, v in p.throughput_gmacs.items()
            ],
            f"{ind}layer_ms:",
            *[
                f"{ind}  {k}: {_num(getattr(p.layer_ms, k))}  {prov.of(prm[f'layer_ms.{k}'])}"
                for k in ("conv", "fc", "rc")
            ],
            f"{ind}launch_ms: {_num(p.launch_ms)}  {prov.of(prm['launch_ms'])}",
            f"{ind}memory_bound: {_num(p.memory_bound)}  {prov.of(prm['memory_bound'])}",
            f"{ind}interference:",
            f"{ind}  cpu: {_num(p.interference.cpu)}  {prov.of(prm['interference.cpu'])}",
            f"{ind}  mem: {_num(p.interference.mem)}  {prov.of(prm['interference.mem'])}",
            f"{ind}supports_rc: {'true' if p.supports_rc else 'false'}  "
            "# source: assumed (ONNX Runtime's CPU provider runs every ONNX op, attention included)",
        ]
        return out

    def _link(self, key: str, link: LinkProfile) -> list[str]:
        why = f"# source: assumed ({self.radio_note})"
        out = [
            f"  {key}:  # the phone's {'Wi-Fi to the cloud' if key == 'wifi' else 'Wi-Fi Direct to the peer'}",
            f"    rtt_ms: {_num(link.rtt_ms)}  {why}",
            f"    idle_w: {_num(link.idle_w)}  {why}",
            "    points:",
        ]
        for pt in link.points:
            fields = ", ".join(f"{k}: {_num(v)}" for k, v in pt.model_dump().items())
            out.append(f"      - {{{fields}}}  {why}")
        return out

    def validated(self) -> tuple[str, DeviceProfile]:
        """The text and the profile it parses to; raises ``ProfileError`` if the writer ever drifts."""
        text = self.render()
        return text, parse_profile(yaml.safe_load(text), f"{self.name}.yaml")
