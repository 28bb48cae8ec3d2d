"""The wire: the gRPC service splitnet.v1.EdgeInference, its generated stubs (``v1``) and
the typed messages both ends build and read (``messages``).

Kept out of the core ``splitnet`` package, which needs no gRPC: the device client and the
edge server import this, and nothing else does.
"""
