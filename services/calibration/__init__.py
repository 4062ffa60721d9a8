"""``autoscale calibrate``: measure this device with the real engine and fit a device profile to it.

``hardware`` finds what the host offers (CPUs, cpufreq steps and whether they can be set, power
sensors through the telemetry sources' own detection); ``measure`` times the zoo networks with
ONNX Runtime per precision, thread count, frequency and co-runner (``services.common.corunners``),
with the co-runner load measured the way the telemetry service measures it; ``fit`` fits the
profile's parameters by least squares on the cost model itself (``services.core.costmodel``)
and reports the error per network; ``profile_yaml`` writes the profile with a ``# source:`` on
every number; ``report`` writes fit.json, report.md and the fit figure.

May import the pure core, the platform code and the telemetry *sources* (sensor detection and the
co-runner load measurement, so that both agree with what the running mesh reports); no service app.
"""
