"""Generated protobuf/gRPC modules (see proto/generate.py)."""
