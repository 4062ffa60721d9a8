"""The Open Inference Protocol (KServe V2, as NVIDIA Triton, KServe and Seldon MLServer speak it).

``models``: its JSON objects; ``codec``: its wire format (JSON tensors and the binary tensor data
extension) to and from the decider's own ``InferRequest`` / ``InferResponse``, so that a V2 request
takes the same path as a native one. The routes are in ``services.decider.api.v2``.
"""
