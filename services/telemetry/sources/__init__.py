"""Telemetry sources: one module per family, all behind ``base.Source``.

``detect_all`` runs every family's detection (cheap file/tool checks, no assumptions) and
returns the measured sources this host really has, in preference order, with a report of
what each family found or why it is absent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from services.telemetry.sources import corunner, cpufreq, power, wireless
from services.telemetry.sources.base import (
    CONDITION_READINGS,
    DetectContext,
    Detection,
    Source,
    energy_name,
    power_name,
)

log = logging.getLogger("autoscale.telemetry.sources")

Detector = Callable[[DetectContext], tuple[list[Source], Detection]]

# Families in preference order: when two measured sources offer the same reading, the first wins.
DETECTORS: dict[str, Detector] = {
    "corunner": corunner.detect,
    "rapl": power.detect_rapl,
    "hwmon": power.detect_hwmon,
    "battery": power.detect_battery,
    "nvml": power.detect_nvml,
    "cpufreq": cpufreq.detect,
    "wireless": wireless.detect,
}


def detect_all(ctx: DetectContext, disabled: frozenset[str] = frozenset()) -> tuple[list[Source], list[Detection]]:
    sources: list[Source] = []
    report: list[Detection] = []
    for family, detector in DETECTORS.items():
        if family in disabled:
            report.append(Detection(family, absent="disabled by AUTOSCALE_TELEMETRY_DISABLE"))
            continue
        try:
            found, det = detector(ctx)
        except Exception as exc:
            log.warning("detection of %s failed: %s", family, exc)
            found, det = [], Detection(family, absent=f"detection failed: {exc}")
        sources += found
        report.append(det)
    return sources, report


__all__ = [
    "CONDITION_READINGS",
    "DETECTORS",
    "DetectContext",
    "Detection",
    "Source",
    "detect_all",
    "energy_name",
    "power_name",
]
