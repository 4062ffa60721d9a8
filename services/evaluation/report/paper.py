"""The paper's numbers (Sec. VI) that the report sets ours beside, and the targets this
implementation reports against (computed, never assumed)."""

from __future__ import annotations

from typing import Any

PAPER: dict[str, Any] = {
    "static_improvement": {"edge-cpu-fp32": 9.8, "edge-best": 2.3, "cloud": 1.6, "connected-edge": 2.7},
    "dynamic_improvement": {"edge-cpu-fp32": 10.7, "edge-best": 2.2, "cloud": 1.4, "connected-edge": 3.2},
    "energy_gap_to_opt_pct": 3.2,
    "qos_gap_to_opt_pp": 1.9,
    "prediction_accuracy_pct": 97.9,
    "runs_to_converge": "40-50",
    "transfer_saving_pct": 21.2,
    "fig13": {  # device -> category -> (Opt %, AutoScale %)
        "mi8pro": {
            "edge-cpu-fp32": (0.0, 0.1),
            "edge-cpu-int8": (25.0, 15.0),
            "edge-gpu-fp32": (0.0, 0.2),
            "edge-gpu-fp16": (30.0, 42.4),
            "edge-dsp-int8": (17.5, 14.9),
            "cloud": (27.5, 27.3),
            "peer": (0.0, 0.1),
        },
        "galaxy_s10e": {
            "edge-cpu-fp32": (0.0, 0.1),
            "edge-cpu-int8": (25.0, 20.9),
            "edge-gpu-fp32": (0.0, 0.8),
            "edge-gpu-fp16": (47.5, 53.4),
            "edge-dsp-int8": (0.0, 0.0),
            "cloud": (27.5, 24.7),
            "peer": (0.0, 0.1),
        },
        "moto_x_force": {
            "edge-cpu-fp32": (0.0, 0.1),
            "edge-cpu-int8": (5.0, 4.2),
            "edge-gpu-fp32": (0.0, 0.2),
            "edge-gpu-fp16": (2.5, 3.4),
            "edge-dsp-int8": (0.0, 0.0),
            "cloud": (50.0, 49.8),
            "peer": (42.5, 42.3),
        },
    },
}
TARGETS: dict[str, float] = {
    "energy_gap_pct": 1.0,
    "qos_gap_pp": 1.0,
    "prediction_accuracy_pct": 99.0,
    "runs_to_converge": 30,
}
