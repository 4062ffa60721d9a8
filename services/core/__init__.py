"""The pure core of AutoScale: what a decision is made of, with no I/O.

Wire schemas, Table I state, the reward (eq. 5), device profiles and the cost model (eqs. 1-4),
scenarios (Table IV) and the policies. May import: the standard library, numpy, pydantic and
scikit-learn. Never: FastAPI, Redis, HTTP clients, files, or any other ``services`` package
(checked by ``make lint``'s import contracts).
"""
