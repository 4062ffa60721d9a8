"""Telemetry service: runtime conditions (Table I's runtime-variance features) and power.

Real sources where the host has them (psutil, RAPL, hwmon, battery, NVML, cpufreq, Wi-Fi),
scenario-driven emulation where it does not; every reading says which (``measured`` or
``emulated``). ``app.create_app`` is the uvicorn factory.
"""
