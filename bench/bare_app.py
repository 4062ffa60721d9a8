"""The floor of `make bench`: a bare FastAPI app that answers ``POST /infer`` with fixed JSON.

Served by the same uvicorn with the same flags and the same one-write httptools protocol
(``services.common.server``) as the mesh's services, so the ratio of
the decider's ``/infer`` throughput to this app's is what the decider's work costs over the least a
FastAPI service can do on this machine.
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI(title="bare FastAPI floor")
FIXED: dict[str, object] = {"model": "tiny-cnn", "policy": "fixed", "target_id": "edge/cpu/fp32", "outputs": []}


@app.post("/infer")
async def infer() -> dict[str, object]:
    return FIXED
