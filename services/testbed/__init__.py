"""``autoscale testbed``: the real mesh on this machine, learning from measured outcomes under real interference.

``timeline`` says what happens when (scenario, co-runners, which request goes to which policy), ``loadgen`` sends
the requests over HTTP and records the answers, ``analysis`` turns the records into the results (``models``),
``figures`` and ``report`` write them. The command that starts the mesh and drives all this is
``services/cli/testbed.py``. May import the pure core, the platform code and the calibration; it talks to the
services over HTTP only.
"""
