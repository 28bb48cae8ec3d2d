"""Benchmarks and deployment checks, each a command that prints JSON:

    python -m experiments.bench.edge          batching, server CPU per request, wire bytes
    python -m experiments.bench.replicas      two replicas against one; a replica killed
    python -m experiments.bench.soak          the server under churn, floods and faults
    python -m experiments.bench.device        the device's own overhead per inference
    python -m experiments.bench.stream        a device's memory and fds over a long stream
    python -m experiments.bench.linearity     device emulation: calibration and linearity
    python -m experiments.bench.probe_study   idle bandwidth probes against the traces
    python -m experiments.bench.pi_check      the device install on an arm64 userland
    python -m experiments.bench.image_check   the edge-server container image

They sit here, not in the runtime packages, because they drive both sides at once: the
device client and the edge server never import each other.
"""
