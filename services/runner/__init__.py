"""The runner service, one package for every role: its app factory, routes, fast path and metrics.

``services.edge_runner``, ``services.peer_runner`` and ``services.cloud_runner`` are thin role
entry points that pick the device profile and the link. May import ``services.core`` and
``services.common``; never the decider or telemetry (they meet over HTTP).
"""
